/**
 * The envelope every call between the core and a module travels in, both
 * ways, each one BSON document: over a Worker's postMessage (one
 * `Uint8Array` each) or a subprocess's stdio (frames back to back), and
 * later over a socket to another machine. Nothing in it assumes shared
 * memory.
 *
 * - `{t: "rpc", id, method, args}`: a call; `args` is the list of the
 *   method's arguments (services.ts). `id` is the sender's own number, unique
 *   among its calls in flight; 0 is a notification, never answered.
 * - `{t: "ret", id, value}` or `{t: "ret", id, error: {code, message, data?}}`:
 *   the answer to the other side's call `id`. `code` names the error (the
 *   lower-case name of a protocol code, e.g. `not_found`, or `not_capable`,
 *   `handler_failed`, `manifest_mismatch`).
 *
 * @module
 */

import { errorName } from "../../shared/errors.ts";
import type { Document } from "../../core/wire/mod.ts";
import { CheckError } from "./checks.ts";

/** A call. */
export interface Rpc {
  /** Always `rpc`. */
  t: "rpc";
  /** The caller's number for it; 0: a notification, not answered. */
  id: number;
  /** The method (services.ts). */
  method: string;
  /** Its arguments, in order. */
  args: unknown[];
}

/** Why a call failed, as it crosses the bridge. */
export interface BridgeError {
  /** The error's name: a protocol code's in lower case, or one of the bridge's own. */
  code: string;
  /** For people. */
  message: string;
  /** Detail for the client (a module's errors), if any. */
  data?: unknown;
}

/** An answer. */
export interface Ret {
  /** Always `ret`. */
  t: "ret";
  /** The id of the call answered. */
  id: number;
  /** The result (absent with `error`). */
  value?: unknown;
  /** The failure. */
  error?: BridgeError;
}

/**
 * Bounds on what a module sends. The SDK keeps within them (it queues calls
 * past the cap and drops log lines past the rate), so only a module that
 * bypasses it can exceed them.
 */
export const MODULE_LIMITS = {
  /** Calls to the core a module may have outstanding at once. */
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

/** Largest id of a call (ids stay exact integers in every runtime). */
const MAX_ID = 2 ** 53 - 1;

/** The envelope of a decoded document, or a description of what is wrong with it. */
export function readEnvelope(doc: Document): Rpc | Ret | string {
  const id = doc.id;
  if (
    typeof id !== "number" || !Number.isInteger(id) || id < 0 || id > MAX_ID
  ) {
    if (doc.t === "rpc") return "an rpc without a valid id";
    if (doc.t === "ret") return "a ret without a valid id";
    return `an unknown message "${String(doc.t).slice(0, 32)}"`;
  }
  if (doc.t === "rpc") {
    if (typeof doc.method !== "string" || !Array.isArray(doc.args)) {
      return "an rpc without a method or args";
    }
    return doc as unknown as Rpc;
  }
  if (doc.t === "ret") {
    if (id === 0) return "a ret for id 0";
    const error = doc.error;
    if (
      error !== undefined && error !== null &&
      (typeof error !== "object" ||
        typeof (error as Document).code !== "string")
    ) {
      return "a ret with a malformed error";
    }
    return doc as unknown as Ret;
  }
  return `an unknown message "${String(doc.t).slice(0, 32)}"`;
}

/**
 * An error as it crosses the bridge: a code-carrying error keeps its code
 * (a protocol error's number by its name, a module error's name), a check
 * that failed is `invalid_parameter`, a denied permission `not_capable`,
 * anything else `handler_failed`.
 */
export function toBridgeError(error: unknown): BridgeError {
  const e = error as { name?: string; code?: unknown; data?: unknown };
  const message = String(
    (error as { message?: unknown })?.message ?? error,
  ).slice(0, 1000);
  if (error instanceof CheckError) {
    return { code: "invalid_parameter", message };
  }
  if (e?.name === "NotCapable") return { code: "not_capable", message };
  const data = e?.data ?? undefined;
  if (typeof e?.code === "number") {
    return { code: errorName(e.code).toLowerCase(), message, data };
  }
  if (typeof e?.code === "string") return { code: e.code, message, data };
  return { code: "handler_failed", message };
}
