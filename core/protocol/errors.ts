/**
 * The error class handlers throw: it carries its protocol code (the table is
 * shared/errors.ts, shared with clients and modules).
 *
 * @module
 */

import type { ErrorCodeValue } from "../../shared/errors.ts";

export {
  ErrorCode,
  type ErrorCodeValue,
  errorName,
} from "../../shared/errors.ts";

/** An error answered to the client with a code and message. */
export class ProtocolError extends Error {
  /** The `error` field of the response. */
  readonly code: ErrorCodeValue;
  /** Optional structured detail (`data` of the response). */
  readonly data?: unknown;

  /** Create an error answered as `{error: code, message, data}`. */
  constructor(code: ErrorCodeValue, message: string, data?: unknown) {
    super(message);
    this.name = "ProtocolError";
    this.code = code;
    this.data = data;
  }
}
