/**
 * The error a module's code throws to answer a call with a code the client
 * sees: the module side's one error type. It carries the code's name
 * (`not_found`); the host answers the client with the protocol code of that
 * name (shared/errors.ts, {@link MODULE_ERROR_CODES}), any other name as
 * INTERNAL.
 *
 * @module
 */

import {
  type ErrorCodeValue,
  MODULE_ERROR_CODES,
  type ModuleErrorCode,
  moduleErrorCode,
} from "../../shared/errors.ts";

export { MODULE_ERROR_CODES, type ModuleErrorCode };

/** An error a handler throws to answer with a code the client sees. */
export class ModuleError extends Error {
  /** The code's name: one of {@link MODULE_ERROR_CODES}, or another (answered as INTERNAL). */
  readonly code: ModuleErrorCode | (string & Record<never, never>);
  /** Detail for the client. */
  readonly data?: unknown;

  /** Create the error. */
  constructor(
    code: ModuleErrorCode | (string & Record<never, never>),
    message: string,
    data?: unknown,
  ) {
    super(message);
    this.name = "ModuleError";
    this.code = code;
    this.data = data;
  }

  /** The protocol code the client is answered with. */
  get protocolCode(): ErrorCodeValue {
    return moduleErrorCode(this.code);
  }
}
