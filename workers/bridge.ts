/**
 * The messages between the core and a module, each one BSON document, the
 * same over a Worker's postMessage and over a subprocess's stdio.
 *
 * Core to module:
 * - `{t: "init", storage: {path?, name, quota}}` once it is ready (its own KV
 *   database; without a path it stores through the core)
 * - `{t: "call", id, command, caller: {address, session}, params}`
 * - `{t: "reply", id, data}` or `{t: "reply", id, error, message}` (answer to a module request)
 * - `{t: "ping", id}`
 *
 * Module to core:
 * - `{t: "ready", commands: [..]}` once the module's code has loaded
 * - `{t: "initialized"}` once it opened its storage
 * - `{t: "result", id, data}` or `{t: "error", id, code, message}` (answer to a call)
 * - `{t: "pong", id}`
 * - `{t: "request", id, op, ...}` for a core service: `push`, those of the
 *   manifest's `services`, and with storage through the core `storage.get`,
 *   `storage.getMany`, `storage.set`, `storage.delete`, `storage.list`,
 *   `storage.commit`
 * - `{t: "log", level, event, fields}`
 *
 * @module
 */

/** The caller of a module command, set by the core from the token. */
export interface BridgeCaller {
  /** The user's address. */
  address: string;
  /** The client session the request came on. */
  session: string;
}

/** Error codes a module may answer with (mapped to protocol errors by the host). */
export const MODULE_ERRORS = {
  /** A handler threw an ordinary error. */
  handler_failed: "handler_failed",
  /** The module tried something its permissions do not allow. */
  not_capable: "not_capable",
  /** No handler for that command. */
  unknown_command: "unknown_command",
  /** A parameter the module refused (the module says which). */
  invalid_parameter: "invalid_parameter",
  /** Something the module looked for does not exist. */
  not_found: "not_found",
  /** A module-defined limit (quota, size). */
  limit_exceeded: "limit_exceeded",
} as const;
