/**
 * Numeric error codes of the `error` field, and their names: the one table
 * the server, its modules and clients share. Every code is documented in
 * docs/PROTOCOL.md.
 *
 * Ranges: 1-99 general, 100-199 login and tokens, 200-299 accounts and
 * administration, 500-599 federation.
 *
 * @module
 */

/** Every error code on the wire. */
export const ErrorCode = {
  /** Success. */
  OK: 0,
  /** The frame is not a valid BSON document or the envelope is broken. */
  MALFORMED: 1,
  /** The frame's length exceeds the limit; the session is closed. */
  FRAME_TOO_LARGE: 2,
  /** No such command. */
  UNKNOWN_COMMAND: 3,
  /** A parameter is missing, has the wrong type or is out of range. */
  INVALID_PARAMETER: 4,
  /** The command needs a token and none valid was given (missing, unknown, expired). */
  NOT_LOGGED_IN: 5,
  /** The token is valid but of the wrong kind, or the caller lacks the right. */
  FORBIDDEN: 6,
  /** Too many requests; `data.retry_after` says seconds to wait when known. */
  RATE_LIMITED: 7,
  /** The module is not loaded, disabled, or not answering. */
  MODULE_UNAVAILABLE: 8,
  /** The command did not finish in time. */
  TIMEOUT: 9,
  /** An unexpected server fault; nothing about it is disclosed. */
  INTERNAL: 10,
  /** Too many sessions from this address or in total. */
  TOO_MANY_SESSIONS: 11,
  /** The server is shutting down. */
  SHUTTING_DOWN: 12,

  /** The answer to the challenge is wrong, or there is no pending challenge. */
  LOGIN_FAILED: 100,
  /** The challenge expired before it was answered. */
  CHALLENGE_EXPIRED: 101,
  /** Too many failed logins; `data.retry_after` says seconds to wait. */
  LOGIN_BLOCKED: 102,
  /** The key algorithm is not supported. */
  UNSUPPORTED_ALGORITHM: 104,
  /** The public key cannot be parsed for its algorithm or is too weak. */
  INVALID_KEY: 105,
  /** A login request names another server than this one; `data.hostname` is this one's name. */
  WRONG_SERVER: 106,

  /** An address, domain or name breaks the identity rules. */
  INVALID_ADDRESS: 200,
  /** The named domain, user, alias, admin, key, session or block does not exist. */
  NOT_FOUND: 201,
  /** It exists already. */
  ALREADY_EXISTS: 202,
  /** The domain still has users or aliases; pass `force: true` to delete all. */
  DOMAIN_NOT_EMPTY: 203,
  /** The alias would forward to itself, directly or through other aliases. */
  ALIAS_LOOP: 204,
  /** The last admin (or an admin's last key) cannot be deleted. */
  LAST_ADMIN: 205,
  /** A count or size limit is exceeded (keys, recipients, photo size ...). */
  LIMIT_EXCEEDED: 206,
  /** Self-registration is not open for the domain. */
  REGISTRATION_CLOSED: 207,
  /** The domain is not hosted on this server. */
  UNKNOWN_DOMAIN: 208,
  /** The recipient's rules refused the message; `message` is their reason. */
  REJECTED: 209,
  /** A module package that is not well formed: its tarball, paths, links, sizes, index or manifest. */
  PACKAGE_INVALID: 230,
  /** A module package changed after signing: a file's SHA-256 or the signature does not verify. */
  PACKAGE_TAMPERED: 231,
  /** A module package signed by another key than the one the admin trusts for the module. */
  PACKAGE_UNTRUSTED_KEY: 232,
  /** An unsigned module package, without the admin's explicit `allow_unsigned`. */
  PACKAGE_UNSIGNED: 233,

  /** Server authentication failed: no or stale challenge, no published key, bad signature. */
  S2S_AUTH_FAILED: 500,
  /** The sending domain's `amtp-servers` record does not list the sending server. */
  S2S_NOT_DELEGATED: 501,
  /** The destination domain is not hosted on the receiving server. */
  S2S_WRONG_DESTINATION: 502,
  /** A delivery's sender is outside the domain the server authenticated for. */
  S2S_FROM_MISMATCH: 503,
  /** The domain publishes no `amtp-servers` record. */
  NO_AMTP_RECORD: 504,
  /** None of the domain's servers could be reached. */
  REMOTE_UNREACHABLE: 505,
  /** A server-to-server command before authentication. */
  S2S_NOT_AUTHENTICATED: 506,
  /** A server or key outside the domain's published delivery policy. */
  POLICY_VIOLATION: 507,
  /** The recipient is reached by ordinary email only: an end-to-end encrypted message cannot go to it. */
  EMAIL_NOT_ENCRYPTED: 508,
  /** The recipient's mail server refused the message; `message` is its reply. */
  REMOTE_REFUSED: 509,
} as const;

/** A numeric error code. */
export type ErrorCodeValue = typeof ErrorCode[keyof typeof ErrorCode];

/** The symbolic name of an error code (`INVALID_PARAMETER` for 4), for logs and the CLI. */
export function errorName(code: number): string {
  for (const [name, value] of Object.entries(ErrorCode)) {
    if (value === code) return name;
  }
  return `ERROR_${code}`;
}

/**
 * The codes a module may answer a call with, by name (the lower-case name
 * of the protocol code): a module's error carries the name, the host maps
 * it to the number. Any other name is answered as INTERNAL.
 */
export const MODULE_ERROR_CODES = {
  unknown_command: ErrorCode.UNKNOWN_COMMAND,
  invalid_parameter: ErrorCode.INVALID_PARAMETER,
  forbidden: ErrorCode.FORBIDDEN,
  not_found: ErrorCode.NOT_FOUND,
  limit_exceeded: ErrorCode.LIMIT_EXCEEDED,
  email_not_encrypted: ErrorCode.EMAIL_NOT_ENCRYPTED,
} as const;

/** A code a module may answer with. */
export type ModuleErrorCode = keyof typeof MODULE_ERROR_CODES;

/** The protocol code of a module's error name; INTERNAL for any other name. */
export function moduleErrorCode(name: string): ErrorCodeValue {
  return Object.hasOwn(MODULE_ERROR_CODES, name)
    ? MODULE_ERROR_CODES[name as ModuleErrorCode]
    : ErrorCode.INTERNAL;
}
