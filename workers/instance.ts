/**
 * One running copy of a module version: its channel, its calls in flight, the
 * heartbeat that tells a busy module from a hung one, the bounds on what it
 * may send, and the core services it may ask for.
 *
 * A call that passes its deadline is answered TIMEOUT when the module still
 * answers pings (a slow handler), and MODULE_UNAVAILABLE when it does not (a
 * hung module, which is then reported down and replaced). Any message from
 * the module shows it is alive, and time the host's own event loop spent busy
 * (a heartbeat tick or a check that comes late) never counts against a
 * module: a flood from one module cannot make the others look hung.
 *
 * Whatever the module sends that the core did not ask for is a violation
 * (bridge.ts, MODULE_LIMITS); past the limit the instance goes down as
 * `misbehaving` and is replaced like a crashed one.
 *
 * @module
 */

import type { Logger } from "../core/log/mod.ts";
import { ErrorCode, ProtocolError } from "../core/protocol/mod.ts";
import type { Document } from "../core/wire/mod.ts";
import { type BridgeCaller, MODULE_LIMITS } from "./bridge.ts";
import type { Channel } from "./isolation/channel.ts";
import type { Isolation, Manifest } from "./manifest.ts";
import { TokenBucket } from "../shared/token_bucket.ts";

/** Core services an instance may ask for. */
export type ServiceHandler = (
  manifest: Manifest,
  request: Document,
) => Promise<unknown>;

/** Why an instance went down. */
export type DownReason = "crashed" | "hung" | "misbehaving" | "stopped";

/** Answers to timed-out calls remembered, so that a late answer is no violation. */
const LATE_IDS = 1024;
/** Times a hang check is repeated because the host itself was busy. */
const HANG_RECHECKS = 10;

/** Timing of heartbeats. */
export interface HeartbeatOptions {
  /** Milliseconds between pings. */
  intervalMs: number;
  /** Milliseconds without a pong before the module counts as hung. */
  toleranceMs: number;
  /** Milliseconds allowed for loading before the start fails. */
  startMs: number;
}

interface PendingCall {
  resolve: (data: unknown) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** Module error codes mapped to protocol codes. */
const MODULE_CODE: Record<string, number> = {
  invalid_parameter: ErrorCode.INVALID_PARAMETER,
  unknown_command: ErrorCode.UNKNOWN_COMMAND,
  not_found: ErrorCode.NOT_FOUND,
  limit_exceeded: ErrorCode.LIMIT_EXCEEDED,
  forbidden: ErrorCode.FORBIDDEN,
};

/** A running module copy. */
export class ModuleInstance {
  readonly manifest: Manifest;
  readonly isolation: Isolation;
  readonly #channel: Channel;
  readonly #services: ServiceHandler;
  readonly #log: Logger;
  readonly #heartbeat: HeartbeatOptions;
  readonly #storePath?: string;
  readonly #now: () => number;
  readonly #calls = new Map<number, PendingCall>();
  /** Ids of calls answered TIMEOUT, whose answer may still come. */
  readonly #late = new Set<number>();
  readonly #logBudget: TokenBucket;
  #nextId = 1;
  /** When the module last sent anything. */
  #lastHeard: number;
  /** Heartbeat time without a word from the module (host stalls excluded). */
  #silentMs = 0;
  #lastTick = 0;
  #pingsOut = 0;
  #initSent = false;
  /** Core-service requests being served. */
  #requests = 0;
  #violations = 0;
  #violationWindow = -Infinity;
  #pingTimer?: ReturnType<typeof setInterval>;
  #ready?: () => void;
  #startFailed?: (detail: string) => void;
  #downHandler?: (reason: DownReason, detail: string) => void;
  #drainWaiters: (() => void)[] = [];
  /** `starting`, `ready` or `down`. */
  state: "starting" | "ready" | "down" = "starting";

  /** Wrap a started channel. */
  constructor(
    manifest: Manifest,
    channel: Channel,
    options: {
      isolation: Isolation;
      services: ServiceHandler;
      log: Logger;
      heartbeat: HeartbeatOptions;
      /** The module's own KV database; absent: it stores through the core. */
      storePath?: string;
      /** Clock in milliseconds (tests inject one). */
      now?: () => number;
    },
  ) {
    this.manifest = manifest;
    this.#channel = channel;
    this.isolation = options.isolation;
    this.#services = options.services;
    this.#log = options.log.child({
      module: manifest.name,
      version: manifest.version,
    });
    this.#heartbeat = options.heartbeat;
    this.#storePath = options.storePath;
    this.#now = options.now ?? (() => performance.now());
    this.#lastHeard = this.#now();
    // The host allows twice the SDK's burst: lines the SDK sent within its
    // budget may arrive bunched together.
    this.#logBudget = new TokenBucket(
      MODULE_LIMITS.logPerSecond,
      2 * MODULE_LIMITS.logBurst,
      this.#now,
    );
    channel.onMessage((doc) => this.#receive(doc));
    channel.onExit((detail) => this.#down("crashed", detail));
  }

  /** Calls in flight. */
  get inflight(): number {
    return this.#calls.size;
  }

  /** Be told once when the instance goes down. */
  onDown(handler: (reason: DownReason, detail: string) => void): void {
    this.#downHandler = handler;
  }

  /** Wait until the module said it is ready; reject when it does not in time. */
  start(): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () =>
          this.#down(
            "crashed",
            `not ready within ${this.#heartbeat.startMs} ms`,
          ),
        this.#heartbeat.startMs,
      );
      this.#ready = () => {
        clearTimeout(timer);
        resolve();
      };
      this.#startFailed = (detail) => {
        clearTimeout(timer);
        reject(new Error(`module failed to start: ${detail}`));
      };
    });
  }

  #receive(doc: Document): void {
    if (this.state === "down") return;
    // Anything from the module shows it is alive.
    this.#lastHeard = this.#now();
    this.#silentMs = 0;
    switch (doc.t) {
      case "ready":
        if (this.#initSent) return this.#violation("a second ready");
        // Loaded: tell it where its storage is; it is ready once it opened it.
        this.#initSent = true;
        this.#channel.send({
          t: "init",
          storage: {
            path: this.#storePath,
            name: this.manifest.name,
            quota: this.manifest.storageQuota,
          },
        });
        return;
      case "initialized":
        if (!this.#initSent || this.state !== "starting") {
          return this.#violation("initialized out of turn");
        }
        this.state = "ready";
        this.#lastTick = this.#now();
        this.#pingTimer = setInterval(
          () => this.#tick(),
          this.#heartbeat.intervalMs,
        );
        this.#ready?.();
        return;
      case "pong":
        if (this.#pingsOut === 0) return this.#violation("a pong to no ping");
        this.#pingsOut--;
        return;
      case "result":
      case "error": {
        const id = doc.id as number;
        const call = this.#calls.get(id);
        if (!call) {
          if (!this.#late.delete(id)) this.#violation("an answer to no call");
          return;
        }
        this.#calls.delete(id);
        clearTimeout(call.timer);
        if (doc.t === "result") call.resolve(doc.data);
        else call.reject(this.#moduleError(doc));
        this.#checkDrained();
        return;
      }
      case "request":
        if (this.#requests >= MODULE_LIMITS.requests) {
          this.#channel.send({
            t: "reply",
            id: doc.id,
            error: "limit_exceeded",
            message: `more than ${MODULE_LIMITS.requests} requests outstanding`,
          });
          return this.#violation("a request past the cap");
        }
        this.#serve(doc);
        return;
      case "log": {
        if (!this.#logBudget.take()) {
          return this.#violation("a log line past the rate");
        }
        const level = doc.level === "warn" || doc.level === "error"
          ? doc.level
          : "info";
        const fields = (doc.fields ?? {}) as Record<string, string>;
        this.#log[level](`module_${String(doc.event).slice(0, 64)}`, fields);
        return;
      }
      default:
        return this.#violation(
          `an unknown message "${String(doc.t).slice(0, 32)}"`,
        );
    }
  }

  /** Count something the core did not ask for; too many stop the instance. */
  #violation(what: string): void {
    const now = this.#now();
    if (now - this.#violationWindow > MODULE_LIMITS.violationWindowMs) {
      this.#violationWindow = now;
      this.#violations = 0;
      this.#log.warn("module_unsolicited", { message: what });
    }
    if (++this.#violations > MODULE_LIMITS.violations) {
      this.#down(
        "misbehaving",
        `more than ${MODULE_LIMITS.violations} messages it was not asked for within ${
          MODULE_LIMITS.violationWindowMs / 1000
        } s (last: ${what})`,
      );
    }
  }

  #moduleError(doc: Document): Error {
    const code = String(doc.code);
    if (code === "not_capable") {
      this.#log.warn("module_permission_denied", {
        message: String(doc.message),
      });
      return new ProtocolError(
        ErrorCode.INTERNAL,
        "the module tried an operation it has no permission for",
      );
    }
    const mapped = MODULE_CODE[code];
    if (mapped !== undefined) {
      return new ProtocolError(
        mapped as 4,
        String(doc.message),
        doc.data ?? undefined,
      );
    }
    this.#log.warn("module_handler_failed", { message: String(doc.message) });
    return new ProtocolError(
      ErrorCode.INTERNAL,
      `the module failed: ${String(doc.message).slice(0, 200)}`,
    );
  }

  async #serve(doc: Document): Promise<void> {
    this.#requests++;
    try {
      const data = await this.#services(this.manifest, doc);
      this.#channel.send({ t: "reply", id: doc.id, data: data ?? null });
    } catch (error) {
      const code = (error as { code?: string }).code ?? "failed";
      this.#channel.send({
        t: "reply",
        id: doc.id,
        error: code,
        message: error instanceof Error ? error.message : String(error),
      });
    } finally {
      this.#requests--;
    }
  }

  #ping(): void {
    this.#pingsOut++;
    this.#channel.send({ t: "ping", id: 0 });
  }

  /** A heartbeat: count the silence (host stalls excluded), judge, ping. */
  #tick(): void {
    if (this.state !== "ready") return;
    const now = this.#now();
    // A tick that comes late means the host's own event loop was busy: that
    // time does not count against the module.
    this.#silentMs += Math.min(
      now - this.#lastTick,
      1.5 * this.#heartbeat.intervalMs,
    );
    this.#lastTick = now;
    if (this.#silentMs > this.#heartbeat.toleranceMs) {
      this.#down("hung", `no heartbeat for ${this.#heartbeat.toleranceMs} ms`);
      return;
    }
    this.#ping();
  }

  /** Call a command; resolves with the module's data. */
  call(
    command: string,
    caller: BridgeCaller,
    params: Document,
  ): Promise<unknown> {
    if (this.state !== "ready") {
      return Promise.reject(
        new ProtocolError(
          ErrorCode.MODULE_UNAVAILABLE,
          `module ${this.manifest.name} is not running`,
        ),
      );
    }
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => this.#deadline(id),
        this.manifest.timeoutMs,
      );
      this.#calls.set(id, { resolve, reject, timer });
      this.#channel.send({
        t: "call",
        id,
        command,
        caller: { ...caller },
        params,
      });
    });
  }

  #timedOut(id: number, call: PendingCall): void {
    this.#calls.delete(id);
    clearTimeout(call.timer);
    this.#late.add(id);
    if (this.#late.size > LATE_IDS) {
      this.#late.delete(this.#late.values().next().value!);
    }
    call.reject(
      new ProtocolError(
        ErrorCode.TIMEOUT,
        `module ${this.manifest.name} did not answer within ${this.manifest.timeoutMs} ms`,
      ),
    );
    this.#checkDrained();
  }

  /** A call passed its deadline: slow handler or hung module? Ask with a ping. */
  #deadline(id: number): void {
    const call = this.#calls.get(id);
    if (!call) return;
    if (this.#now() - this.#lastHeard < 2 * this.#heartbeat.intervalMs + 50) {
      // Heartbeats keep coming: the module is alive, the handler is slow.
      this.#timedOut(id, call);
      return;
    }
    this.#confirmHang(id, call, 0);
  }

  /** Ping and wait; silence means hung, unless the host itself was too busy to hear. */
  #confirmHang(id: number, call: PendingCall, attempt: number): void {
    const wait = Math.min(1000, this.#heartbeat.toleranceMs);
    const asked = this.#now();
    this.#ping();
    setTimeout(() => {
      if (!this.#calls.has(id) || this.state !== "ready") return;
      if (this.#lastHeard >= asked) {
        this.#timedOut(id, call);
        return;
      }
      const late = this.#now() - asked - wait;
      if (late > wait / 2 && attempt < HANG_RECHECKS) {
        this.#confirmHang(id, call, attempt + 1); // the host was busy: ask again
        return;
      }
      this.#down("hung", "a call passed its deadline and pings go unanswered");
    }, wait);
  }

  #checkDrained(): void {
    if (this.#calls.size === 0) {
      for (const resolve of this.#drainWaiters.splice(0)) resolve();
    }
  }

  /** Resolve once no call is in flight, or after `ms`. */
  drained(ms: number): Promise<void> {
    if (this.#calls.size === 0) return Promise.resolve();
    return Promise.race([
      new Promise<void>((resolve) => this.#drainWaiters.push(resolve)),
      new Promise<void>((resolve) => setTimeout(resolve, ms)),
    ]);
  }

  #down(reason: DownReason, detail: string): void {
    if (this.state === "down") return;
    const wasStarting = this.state === "starting";
    this.state = "down";
    clearInterval(this.#pingTimer);
    for (const [, call] of this.#calls) {
      clearTimeout(call.timer);
      call.reject(
        new ProtocolError(
          ErrorCode.MODULE_UNAVAILABLE,
          `module ${this.manifest.name} ${
            reason === "hung"
              ? "stopped answering"
              : reason === "misbehaving"
              ? "was stopped for misbehaving"
              : "went down"
          }`,
        ),
      );
    }
    this.#calls.clear();
    this.#checkDrained();
    this.#channel.stop();
    if (wasStarting) {
      this.#startFailed?.(detail);
      return;
    }
    if (reason !== "stopped") {
      this.#log.warn("module_down", {
        reason,
        detail,
        isolation: this.isolation,
      });
    }
    this.#downHandler?.(reason, detail);
  }

  /** Stop the instance (calls in flight get MODULE_UNAVAILABLE). */
  stop(): void {
    this.#down("stopped", "stopped by the host");
  }
}
