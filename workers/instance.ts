/**
 * One running copy of a module version: its channel, its calls in flight, the
 * heartbeat that tells a busy module from a hung one, and the core services
 * it may ask for.
 *
 * A call that passes its deadline is answered TIMEOUT when the module still
 * answers pings (a slow handler), and MODULE_UNAVAILABLE when it does not (a
 * hung module, which is then reported down and replaced).
 *
 * @module
 */

import type { Logger } from "../core/log/mod.ts";
import { ErrorCode, ProtocolError } from "../core/protocol/mod.ts";
import type { Document } from "../core/wire/mod.ts";
import type { BridgeCaller } from "./bridge.ts";
import type { Channel } from "./isolation/channel.ts";
import type { Isolation, Manifest } from "./manifest.ts";

/** Core services an instance may ask for. */
export type ServiceHandler = (
  manifest: Manifest,
  request: Document,
) => Promise<unknown>;

/** Why an instance went down. */
export type DownReason = "crashed" | "hung" | "stopped";

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
  started: number;
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
  readonly #calls = new Map<number, PendingCall>();
  #nextId = 1;
  #lastPong = performance.now();
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
    switch (doc.t) {
      case "ready":
        // Loaded: tell it where its storage is; it is ready once it opened it.
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
        this.state = "ready";
        this.#lastPong = performance.now();
        this.#pingTimer = setInterval(
          () => this.#ping(),
          this.#heartbeat.intervalMs,
        );
        this.#ready?.();
        return;
      case "pong":
        this.#lastPong = performance.now();
        return;
      case "result":
      case "error": {
        const call = this.#calls.get(doc.id as number);
        if (!call) return;
        this.#calls.delete(doc.id as number);
        clearTimeout(call.timer);
        this.#lastPong = performance.now();
        if (doc.t === "result") call.resolve(doc.data);
        else call.reject(this.#moduleError(doc));
        this.#checkDrained();
        return;
      }
      case "request":
        this.#serve(doc);
        return;
      case "log": {
        const level = doc.level === "warn" || doc.level === "error"
          ? doc.level
          : "info";
        const fields = (doc.fields ?? {}) as Record<string, string>;
        this.#log[level](`module_${String(doc.event).slice(0, 64)}`, fields);
        return;
      }
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
    }
  }

  #ping(): void {
    if (this.state !== "ready") return;
    if (performance.now() - this.#lastPong > this.#heartbeat.toleranceMs) {
      this.#down("hung", `no heartbeat for ${this.#heartbeat.toleranceMs} ms`);
      return;
    }
    this.#channel.send({ t: "ping", id: 0 });
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
      const started = performance.now();
      const timer = setTimeout(
        () => this.#deadline(id),
        this.manifest.timeoutMs,
      );
      this.#calls.set(id, { resolve, reject, timer, started });
      this.#channel.send({
        t: "call",
        id,
        command,
        caller: { ...caller },
        params,
      });
    });
  }

  /** A call passed its deadline: slow handler or hung module? Ask with a ping. */
  #deadline(id: number): void {
    const call = this.#calls.get(id);
    if (!call) return;
    const asked = performance.now();
    if (asked - this.#lastPong < 2 * this.#heartbeat.intervalMs + 50) {
      // Heartbeats keep coming: the module is alive, the handler is slow.
      this.#calls.delete(id);
      clearTimeout(call.timer);
      call.reject(
        new ProtocolError(
          ErrorCode.TIMEOUT,
          `module ${this.manifest.name} did not answer within ${this.manifest.timeoutMs} ms`,
        ),
      );
      this.#checkDrained();
      return;
    }
    this.#channel.send({ t: "ping", id: 0 });
    setTimeout(() => {
      if (!this.#calls.has(id)) return;
      if (this.#lastPong >= asked) {
        this.#calls.delete(id);
        call.reject(
          new ProtocolError(
            ErrorCode.TIMEOUT,
            `module ${this.manifest.name} did not answer within ${this.manifest.timeoutMs} ms`,
          ),
        );
        this.#checkDrained();
      } else {
        this.#down(
          "hung",
          `a call passed its deadline and pings go unanswered`,
        );
      }
    }, Math.min(1000, this.#heartbeat.toleranceMs));
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
            reason === "hung" ? "stopped answering" : "went down"
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
