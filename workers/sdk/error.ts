/**
 * The error a module's code throws to answer a call with a code the client
 * sees (mapped to protocol codes by the host).
 *
 * @module
 */

/** An error a handler throws to answer with a code the client sees. */
export class ModuleError extends Error {
  /** `invalid_parameter`, `not_found`, `limit_exceeded` or `handler_failed`. */
  readonly code: string;
  /** Detail for the client. */
  readonly data?: unknown;

  /** Create the error. */
  constructor(code: string, message: string, data?: unknown) {
    super(message);
    this.name = "ModuleError";
    this.code = code;
    this.data = data;
  }
}
