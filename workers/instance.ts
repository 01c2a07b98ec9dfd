/**
 * One running copy of a module version: its end of the bridge, its calls
 * and their deadlines, the heartbeat that tells a busy module from a hung
 * one, and the bounds on what it may send.
 *
 * Start: the module says `ready`, the core calls its `start` (storage, the
 * manifest's commands); a module whose handlers differ from the manifest
 * refuses, and the copy does not start ({@link ManifestMismatchError}).
 *
 * A call that passes its deadline is answered TIMEOUT when the module still
 * answers pings (a slow handler), and MODULE_UNAVAILABLE when it does not (a
 * hung module, which is then reported down and replaced). Any message from
 * the module shows it is alive, and time the host's own event loop spent busy
 * (a heartbeat tick or a check that comes late) never counts against a
 * module: a flood from one module cannot make the others look hung.
 *
 * Whatever the module sends that the core did not ask for is a violation
 * (bridge/envelope.ts, MODULE_LIMITS); past the limit the instance goes down
 * as `misbehaving` and is replaced like a crashed one.
 *
 * @module
 */

import type { Logger } from "../core/log/mod.ts";
import { ErrorCode, ProtocolError } from "../core/protocol/mod.ts";
import type { Document } from "../core/wire/mod.ts";
import { moduleErrorCode } from "../shared/errors.ts";
import { TokenBucket } from "../shared/token_bucket.ts";
import { CheckError } from "./bridge/checks.ts";
import { Endpoint, RemoteError } from "./bridge/endpoint.ts";
import { MODULE_LIMITS } from "./bridge/envelope.ts";
import {
  type BridgeCaller,
  type ComposeRequest,
  type InboundDelivery,
  type InboundResult,
  MODULE_OFFERS,
  type ModuleOffers,
  READY,
  type TransportRequest,
  type TransportResult,
} from "./bridge/services.ts";
import type { Channel } from "./isolation/channel.ts";
import { handledCommands, type Isolation, type Manifest } from "./manifest.ts";
import type { ServiceCaller } from "./services.ts";

/** Serves a module's call of a core service (workers/services.ts). */
export type ServeService = (
  caller: ServiceCaller,
  method: string,
  args: unknown[],
) => unknown;

/** Why an instance went down. */
export type DownReason = "crashed" | "hung" | "misbehaving" | "stopped";

/** Times a hang check is repeated because the host itself was busy. */
const HANG_RECHECKS = 10;

/** Timing of heartbeats. */
export interface HeartbeatOptions {
  /** Milliseconds between pings. */
  intervalMs: number;
  /** Milliseconds without a word from the module before it counts as hung. */
  toleranceMs: number;
  /** Milliseconds allowed for loading before the start fails. */
  startMs: number;
}

/** A module whose handlers differ from its manifest's commands: not started, not restarted. */
export class ManifestMismatchError extends Error {
  /** Stable error code. */
  readonly code = "manifest_mismatch";

  /** The module's own words. */
  constructor(message: string) {
    super(message);
    this.name = "ManifestMismatchError";
  }
}

/** The offers of a module (services.ts) a slot's calls go to. */
export type CopyOffer = "call" | "inbound" | "compose" | "transport" | "event";

/**
 * What serves a slot's calls: one running copy ({@link ModuleInstance}), or
 * the connected instances of a remote module (remote/pool.ts). Its calls are
 * the module's offers, declared once in {@link ModuleOffers}.
 */
export interface ModuleCopy extends Pick<ModuleOffers, CopyOffer> {
  /** `ready` when it takes calls. */
  readonly state: "starting" | "ready" | "down";
  /** Calls in flight. */
  readonly inflight: number;
  /** Whether it takes deliveries from other servers. */
  readonly federates: boolean;
  /** Whether it composes its queued payloads as Internet messages. */
  readonly composes: boolean;
  /** Whether it carries the routes its manifest names. */
  readonly carries: boolean;
  /** Resolve once no call is in flight, or after `ms`. */
  drained(ms: number): Promise<void>;
  /** Stop it. */
  stop(): void;
}

/** A running module copy. */
export class ModuleInstance implements ModuleCopy {
  readonly manifest: Manifest;
  readonly isolation: Isolation;
  readonly #channel: Channel;
  readonly #endpoint: Endpoint;
  readonly #serveService: ServeService;
  readonly #denied?: () => void;
  readonly #caller: ServiceCaller;
  readonly #log: Logger;
  readonly #heartbeat: HeartbeatOptions;
  readonly #storePath?: string;
  readonly #now: () => number;
  /**
   * Deadlines of calls in flight (performance.now() milliseconds), by call
   * id. Every call of a copy has the same timeout, so they are in order of
   * their deadlines: one timer, armed for the first, serves them all.
   */
  readonly #deadlines = new Map<number, number>();
  #deadlineTimer?: ReturnType<typeof setTimeout>;
  readonly #logBudget: TokenBucket;
  /** When the module last sent anything. */
  #lastHeard: number;
  /** Heartbeat time without a word from the module (host stalls excluded). */
  #silentMs = 0;
  #lastTick = 0;
  #readySeen = false;
  #inbound = false;
  #composes = false;
  #carries = false;
  #violations = 0;
  #violationWindow = -Infinity;
  #pingTimer?: ReturnType<typeof setInterval>;
  #started?: () => void;
  #startFailed?: (error: Error) => void;
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
      /** The core's services (workers/services.ts). */
      serve: ServeService;
      log: Logger;
      heartbeat: HeartbeatOptions;
      /** The module's own KV database; absent: it stores through the core. */
      storePath?: string;
      /** Clock in milliseconds (tests inject one). */
      now?: () => number;
      /** Told when the module tried an operation it has no permission for. */
      denied?: () => void;
    },
  ) {
    this.manifest = manifest;
    this.#channel = channel;
    this.isolation = options.isolation;
    this.#serveService = options.serve;
    this.#denied = options.denied;
    this.#log = options.log.child({
      module: manifest.name,
      version: manifest.version,
    });
    this.#caller = { manifest, log: this.#log };
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
    this.#endpoint = new Endpoint((doc) => channel.send(doc), {
      serve: (method, args) => this.#served(method, args),
      unsolicited: (what) => this.#violation(what),
      maxServing: MODULE_LIMITS.requests,
    });
    channel.onMessage((doc) => this.#receive(doc));
    channel.onExit((detail) => this.#down("crashed", detail));
  }

  /** Calls in flight. */
  get inflight(): number {
    return this.#deadlines.size;
  }

  /** Whether the module takes deliveries from other servers (it has an `inbound` handler). */
  get federates(): boolean {
    return this.#inbound;
  }

  /** Whether the module composes its queued payloads as Internet messages. */
  get composes(): boolean {
    return this.#composes;
  }

  /** Whether the module carries the routes its manifest names in `transports`. */
  get carries(): boolean {
    return this.#carries;
  }

  /** Be told once when the instance goes down. */
  onDown(handler: (reason: DownReason, detail: string) => void): void {
    this.#downHandler = handler;
  }

  /**
   * Wait until the module said it is ready and started; reject when it does
   * not in time, or refuses ({@link ManifestMismatchError}).
   */
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
      this.#started = () => {
        clearTimeout(timer);
        resolve();
      };
      this.#startFailed = (error) => {
        clearTimeout(timer);
        reject(error);
      };
    });
  }

  #receive(doc: Document): void {
    if (this.state === "down") return;
    // Anything from the module shows it is alive.
    this.#lastHeard = this.#now();
    this.#silentMs = 0;
    this.#endpoint.receive(doc);
  }

  /** A call of the module: its life cycle, or a core service. */
  #served(method: string, args: unknown[]): unknown {
    if (method === READY) {
      if (this.#readySeen) return this.#violation("a second ready");
      this.#readySeen = true;
      this.#begin();
      return;
    }
    if (method === "log" && !this.#logBudget.take()) {
      return this.#violation("a log line past the rate");
    }
    return this.#serveService(this.#caller, method, args);
  }

  /** Loaded: tell it its storage and commands; it is ready once it started. */
  async #begin(): Promise<void> {
    const { answer } = this.#endpoint.begin("start", [{
      commands: handledCommands(this.manifest),
      storage: {
        path: this.#storePath,
        name: this.manifest.name,
        quota: this.manifest.storageQuota,
      },
    }]);
    let started: Awaited<ReturnType<ModuleOffers["start"]>>;
    try {
      started = MODULE_OFFERS.start.result(await answer, "start");
    } catch (error) {
      const refused = error instanceof RemoteError &&
        error.code === "manifest_mismatch";
      this.#down(
        "crashed",
        refused
          ? error.message
          : `failed to start: ${(error as Error).message}`,
        refused ? new ManifestMismatchError(error.message) : undefined,
      );
      return;
    }
    if (this.state !== "starting") return;
    this.#inbound = started.inbound;
    this.#composes = started.compose === true;
    this.#carries = started.transport === true;
    this.state = "ready";
    this.#lastTick = this.#now();
    this.#pingTimer = setInterval(
      () => this.#tick(),
      this.#heartbeat.intervalMs,
    );
    this.#started?.();
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

  /** A module's error as the client sees it. */
  #clientError(error: unknown): Error {
    if (error instanceof CheckError) {
      this.#log.warn("module_answer_invalid", { message: error.message });
      return new ProtocolError(
        ErrorCode.INTERNAL,
        `the module's answer is not what the bridge declares: ${error.message}`,
      );
    }
    if (!(error instanceof RemoteError)) return error as Error;
    if (error.code === "not_capable") {
      this.#log.warn("module_permission_denied", { message: error.message });
      this.#denied?.();
      return new ProtocolError(
        ErrorCode.INTERNAL,
        "the module tried an operation it has no permission for",
      );
    }
    const code = moduleErrorCode(error.code);
    if (code !== ErrorCode.INTERNAL) {
      return new ProtocolError(code, error.message, error.data);
    }
    this.#log.warn("module_handler_failed", { message: error.message });
    return new ProtocolError(
      ErrorCode.INTERNAL,
      `the module failed: ${error.message.slice(0, 200)}`,
    );
  }

  #ping(): void {
    // The answer is the sign of life; its value does not matter.
    this.#endpoint.begin("ping", []).answer.catch(() => {});
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

  /** Call one of the module's offers under its deadline; resolves with the checked answer. */
  async #call<M extends CopyOffer>(
    method: M,
    args: Parameters<ModuleOffers[M]>,
  ): Promise<Awaited<ReturnType<ModuleOffers[M]>>> {
    if (this.state !== "ready") {
      throw new ProtocolError(
        ErrorCode.MODULE_UNAVAILABLE,
        `module ${this.manifest.name} is not running`,
      );
    }
    const { id, answer } = this.#endpoint.begin(method, args);
    this.#deadlines.set(id, performance.now() + this.manifest.timeoutMs);
    this.#deadlineTimer ??= setTimeout(
      () => this.#sweep(),
      this.manifest.timeoutMs,
    );
    try {
      return MODULE_OFFERS[method].result(
        await answer,
        method,
      ) as Awaited<ReturnType<ModuleOffers[M]>>;
    } catch (error) {
      throw this.#clientError(error);
    } finally {
      this.#deadlines.delete(id);
      this.#checkDrained();
    }
  }

  /** The deadline timer: calls past theirs are judged; armed again for the next. */
  #sweep(): void {
    this.#deadlineTimer = undefined;
    if (this.state !== "ready") return;
    const now = performance.now();
    for (const [id, deadline] of this.#deadlines) {
      if (deadline === Infinity) continue; // judged already
      if (deadline > now) {
        this.#deadlineTimer = setTimeout(
          () => this.#sweep(),
          Math.max(1, deadline - now),
        );
        return;
      }
      // Judged once: moved to the end, never due again.
      this.#deadlines.delete(id);
      this.#deadlines.set(id, Infinity);
      this.#deadline(id);
      if (this.state !== "ready") return;
    }
  }

  /** Run a command; resolves with the module's data. */
  call(
    command: string,
    caller: BridgeCaller,
    params: Document,
  ): Promise<unknown> {
    return this.#call("call", [command, { ...caller }, params]);
  }

  /** Hand a delivery from another server, or a bounce, to the module's `inbound`. */
  inbound(
    caller: BridgeCaller,
    delivery: InboundDelivery,
  ): Promise<InboundResult> {
    return this.#call("inbound", [{ ...caller }, delivery]);
  }

  /** Compose one of the module's queued payloads as an Internet message. */
  compose(
    caller: BridgeCaller,
    request: ComposeRequest,
  ): Promise<{ raw: Uint8Array }> {
    return this.#call("compose", [{ ...caller }, request]);
  }

  /** Hand the module an event of another module it subscribes to. */
  event(caller: BridgeCaller, event: string, data: unknown): Promise<null> {
    return this.#call("event", [{ ...caller }, event, data]);
  }

  /** Carry a message over one of the module's routes. */
  transport(request: TransportRequest): Promise<TransportResult> {
    return this.#call("transport", [request]);
  }

  #timedOut(id: number): void {
    this.#endpoint.abandon(
      id,
      new ProtocolError(
        ErrorCode.TIMEOUT,
        `module ${this.manifest.name} did not answer within ${this.manifest.timeoutMs} ms`,
      ),
    );
  }

  /** A call passed its deadline: slow handler or hung module? Ask with a ping. */
  #deadline(id: number): void {
    if (!this.#deadlines.has(id)) return;
    if (this.#now() - this.#lastHeard < 2 * this.#heartbeat.intervalMs + 50) {
      // Heartbeats keep coming: the module is alive, the handler is slow.
      this.#timedOut(id);
      return;
    }
    this.#confirmHang(id, 0);
  }

  /** Ping and wait; silence means hung, unless the host itself was too busy to hear. */
  #confirmHang(id: number, attempt: number): void {
    const wait = Math.min(1000, this.#heartbeat.toleranceMs);
    const asked = this.#now();
    this.#ping();
    setTimeout(() => {
      if (!this.#deadlines.has(id) || this.state !== "ready") return;
      if (this.#lastHeard >= asked) {
        this.#timedOut(id);
        return;
      }
      const late = this.#now() - asked - wait;
      if (late > wait / 2 && attempt < HANG_RECHECKS) {
        this.#confirmHang(id, attempt + 1); // the host was busy: ask again
        return;
      }
      this.#down("hung", "a call passed its deadline and pings go unanswered");
    }, wait);
  }

  #checkDrained(): void {
    if (this.#deadlines.size === 0) {
      for (const resolve of this.#drainWaiters.splice(0)) resolve();
    }
  }

  /** Resolve once no call is in flight, or after `ms`. */
  drained(ms: number): Promise<void> {
    if (this.#deadlines.size === 0) return Promise.resolve();
    return Promise.race([
      new Promise<void>((resolve) => this.#drainWaiters.push(resolve)),
      new Promise<void>((resolve) => setTimeout(resolve, ms)),
    ]);
  }

  #down(reason: DownReason, detail: string, startError?: Error): void {
    if (this.state === "down") return;
    const wasStarting = this.state === "starting";
    this.state = "down";
    clearInterval(this.#pingTimer);
    clearTimeout(this.#deadlineTimer);
    this.#endpoint.close(
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
    this.#channel.stop();
    if (wasStarting) {
      this.#startFailed?.(
        startError ?? new Error(`module failed to start: ${detail}`),
      );
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
