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
 * What a module may send is bounded ({@link MODULE_LIMITS}): anything the
 * core did not ask for (an answer to no call, a pong to no ping, a request
 * past the cap, a log line past the rate) is a violation, and too many stop
 * the instance as misbehaving.
 *
 * @module
 */

/**
 * Bounds on what a module sends. The SDK keeps within them (it queues
 * requests past the cap and drops log lines past the rate), so only a module
 * that bypasses it can exceed them.
 */
export const MODULE_LIMITS = {
  /** Core-service requests a module may have outstanding at once. */
  requests: 256,
  /** Log lines per second a module may send, on average. */
  logPerSecond: 100,
  /** Log lines a module may send in a burst (the host allows twice this). */
  logBurst: 200,
  /** Violations within {@link MODULE_LIMITS.violationWindowMs} that stop an instance. */
  violations: 100,
  /** The window violations are counted in, in milliseconds. */
  violationWindowMs: 10_000,
} as const;

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
