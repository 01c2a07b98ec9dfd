/**
 * The supervisor: starts a copy of a module version, swaps it in when it is
 * ready (the old copy finishes its calls), restarts a copy that went down
 * with backoff, moves a Worker that hung to a process for good, stops copies,
 * and leaves a refused module alone until an admin acts.
 *
 * @module
 */

import type { ModuleObserver } from "./router.ts";
import type { Logger } from "../core/log/mod.ts";
import { ErrorCode, ProtocolError } from "../core/protocol/mod.ts";
import {
  type DownReason,
  type HeartbeatOptions,
  ManifestMismatchError,
  type ModuleCopy,
  ModuleInstance,
  type ServeService,
} from "./instance.ts";
import { RemotePool } from "./remote/pool.ts";
import type { Channel } from "./isolation/channel.ts";
import { ImportRefusedError } from "./isolation/imports.ts";
import type { ModuleTable, Slot } from "./table.ts";

/** Longest restart delay in milliseconds. */
const MAX_RESTART_MS = 30_000;
/** A copy up this long has its failures forgotten (the backoff starts over). */
const STABLE_MS = 60_000;

/** Options of {@link Supervisor}. */
export interface SupervisorOptions {
  /** The versions it supervises. */
  table: ModuleTable;
  /** Logger. */
  log: Logger;
  /**
   * Start a runtime for a slot where it says (a Worker or a process), its
   * code checked first: throws {@link ImportRefusedError} when refused.
   */
  open: (slot: Slot) => Promise<Channel>;
  /** The core's services for the copies. */
  serve: ServeService;
  /** A module's own database, or undefined when modules store in the core's. */
  storePath: (name: string) => string | undefined;
  /** Heartbeat timing. */
  heartbeat: HeartbeatOptions;
  /** First restart delay in milliseconds (doubles up to 30 s). */
  restartBaseMs: number;
  /** Hangs in a Worker after which a version moves to a process. */
  hangsBeforeProcess: number;
  /** Clock in epoch milliseconds (tests move it). */
  now?: () => number;
  /** Told of restarts and denials. */
  observer?: ModuleObserver;
}

/** Starts, restarts and stops module copies. */
export class Supervisor {
  readonly #options: SupervisorOptions;
  readonly #now: () => number;
  #closed = false;

  /** Supervise the slots of `options.table`. */
  constructor(options: SupervisorOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  /**
   * Start a copy for a slot and swap it in when ready; undefined when it
   * failed (a restart is scheduled) or was refused (none is).
   */
  async launch(slot: Slot): Promise<ModuleCopy | undefined> {
    if (slot.isolation === "remote") return this.#placeRemote(slot);
    if (slot.state !== "running") slot.state = "starting";
    let instance: ModuleInstance;
    try {
      const channel = await this.#options.open(slot);
      instance = new ModuleInstance(slot.manifest, channel, {
        isolation: slot.isolation,
        serve: this.#options.serve,
        log: this.#options.log,
        heartbeat: this.#options.heartbeat,
        storePath: this.#options.storePath(slot.manifest.name),
        denied: () => this.#options.observer?.denied(slot.manifest.name),
      });
    } catch (error) {
      if (error instanceof ImportRefusedError) this.#refuse(slot, error);
      else this.#failed(slot, String(error));
      return undefined;
    }
    instance.onDown((reason, detail) =>
      this.#onDown(slot, instance, reason, detail)
    );
    try {
      await instance.start();
    } catch (error) {
      if (error instanceof ManifestMismatchError) this.#refuse(slot, error);
      else {
        this.#failed(
          slot,
          error instanceof Error ? error.message : String(error),
        );
      }
      return undefined;
    }
    if (this.#closed || !slot.enabled || !slot.loaded) {
      instance.stop();
      return undefined;
    }
    const old = slot.instance;
    slot.instance = instance;
    slot.state = "running";
    slot.upSince = this.#now();
    if (old && old !== instance) {
      old.drained(slot.manifest.timeoutMs).then(() => old.stop());
    }
    this.#options.log.info("module_started", {
      module: slot.manifest.name,
      version: slot.manifest.version,
      isolation: slot.isolation,
    });
    return instance;
  }

  /**
   * A version placed remote: an empty pool its instances join as they log
   * in (the host's `attach`); the copy it replaces finishes its calls.
   */
  #placeRemote(slot: Slot): RemotePool | undefined {
    if (this.#closed || !slot.enabled || !slot.loaded) return undefined;
    const old = slot.instance;
    const pool = new RemotePool(slot.manifest);
    slot.instance = pool;
    slot.state = "waiting";
    slot.upSince = this.#now();
    slot.lastError = "";
    if (old) old.drained(slot.manifest.timeoutMs).then(() => old.stop());
    this.#options.log.info("module_placed_remote", {
      module: slot.manifest.name,
      version: slot.manifest.version,
    });
    return pool;
  }

  /** {@link launch}, failing with MODULE_UNAVAILABLE (naming why) when no copy started. */
  async launchOrThrow(slot: Slot): Promise<void> {
    if (await this.launch(slot)) return;
    throw new ProtocolError(
      ErrorCode.MODULE_UNAVAILABLE,
      `module ${slot.manifest.name} ${slot.manifest.version} ${
        slot.state === "refused" ? "was refused" : "failed to start"
      }: ${slot.lastError}`,
    );
  }

  /** Stop a slot's copy once its calls are done (or its deadline passed). */
  async retire(slot: Slot): Promise<void> {
    const old = slot.instance;
    slot.instance = undefined;
    if (old) {
      await old.drained(slot.manifest.timeoutMs);
      old.stop();
    }
  }

  /** Forget a pending restart. */
  cancelRestart(slot: Slot): void {
    clearTimeout(slot.restartTimer);
    slot.restartTimer = undefined;
  }

  /** Stop every copy; nothing restarts after. */
  async close(): Promise<void> {
    this.#closed = true;
    const stops = [];
    for (const slot of this.#options.table.slots()) {
      this.cancelRestart(slot);
      stops.push(this.retire(slot));
    }
    await Promise.all(stops);
  }

  /**
   * The module's code imports what it may not load, or its handlers differ
   * from its manifest: no restart until an admin acts.
   */
  #refuse(slot: Slot, error: ImportRefusedError | ManifestMismatchError): void {
    slot.lastError = error.message;
    if (!slot.instance) slot.state = "refused";
    this.#options.log.error("module_refused", {
      module: slot.manifest.name,
      version: slot.manifest.version,
      error: error.message,
    });
  }

  #failed(slot: Slot, detail: string): void {
    slot.lastError = detail;
    this.#options.log.error("module_start_failed", {
      module: slot.manifest.name,
      version: slot.manifest.version,
      error: detail,
    });
    if (!slot.instance) this.#scheduleRestart(slot);
  }

  #onDown(
    slot: Slot,
    instance: ModuleInstance,
    reason: DownReason,
    detail: string,
  ): void {
    if (slot.instance !== instance) return; // an old or never-swapped instance
    slot.instance = undefined;
    if (reason === "stopped" || this.#closed) return;
    slot.lastError = `${reason}: ${detail}`;
    if (reason === "hung") {
      slot.hangs++;
      if (
        slot.isolation === "worker" &&
        slot.hangs >= this.#options.hangsBeforeProcess
      ) {
        // For good: its abandoned thread still spins; the next one could too.
        slot.isolation = "process";
        slot.isolationSet = true;
        this.#options.table.persist(slot.manifest.name).catch(() => {});
        this.#options.log.warn("module_isolation_changed", {
          module: slot.manifest.name,
          version: slot.manifest.version,
          reason:
            `hung ${slot.hangs} time(s) in a Worker, whose loop cannot be stopped: now a killable process`,
        });
      }
    }
    this.#scheduleRestart(slot);
  }

  #scheduleRestart(slot: Slot): void {
    if (this.#closed || !slot.enabled || !slot.loaded || slot.restartTimer) {
      return;
    }
    if (this.#now() - slot.upSince > STABLE_MS) slot.failures = 0;
    const delay = Math.min(
      MAX_RESTART_MS,
      this.#options.restartBaseMs * 2 ** slot.failures,
    );
    slot.failures++;
    slot.state = "restarting";
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = undefined;
      if (this.#closed || !slot.enabled || !slot.loaded) return;
      slot.restarts++;
      this.#options.observer?.restarted(slot.manifest.name);
      this.launch(slot);
    }, delay);
  }
}
