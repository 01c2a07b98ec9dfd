/**
 * The admin's life-cycle operations on module versions: list them with
 * their state and figures, load, unload, reload, enable, disable, choose the
 * default version and the isolation. Each acts at once, without a server
 * restart, and the choices persist. The admin commands (core/admin/modules.ts)
 * call these.
 *
 * @module
 */

import type { Logger } from "../core/log/mod.ts";
import { ErrorCode, ProtocolError } from "../core/protocol/mod.ts";
import { type Isolation, loadManifest, type Manifest } from "./manifest.ts";
import type { Supervisor } from "./supervisor.ts";
import type { ModuleTable, Slot } from "./table.ts";
import { type RemoteInstanceStatus, RemotePool } from "./remote/pool.ts";

/** What admins see of one module version. */
export interface ModuleStatus {
  /** Module name. */
  name: string;
  /** Version. */
  version: string;
  /** `running`, `starting`, `waiting` (remote, no instance connected), `restarting`, `refused`, `disabled` or `unloaded`. */
  state: string;
  /** Whether it serves requests when running. */
  enabled: boolean;
  /** Whether it is the default version of its module. */
  default: boolean;
  /** `worker`, `process` or `remote`. */
  isolation: Isolation;
  /** Remote: the connected instances. */
  instances?: RemoteInstanceStatus[];
  /** Whether it was shipped with the server (trusted to run in a Worker). */
  shipped: boolean;
  /** Commands served. */
  commands: string[];
  /** Calls answered. */
  calls: number;
  /** Calls answered with an error. */
  errors: number;
  /** Restarts after a crash or hang. */
  restarts: number;
  /** Times it stopped answering. */
  hangs: number;
  /** Median call latency in milliseconds. */
  p50_ms: number;
  /** 99th percentile call latency in milliseconds. */
  p99_ms: number;
  /** Last failure, if any. */
  last_error: string;
  /** Storage quota in bytes. */
  storage_quota: number;
  /** `shipped` (with the server), `folder` (put on disk by hand) or `package` (installed). */
  source: "shipped" | "folder" | "package";
  /** The author key an installed package was signed with (SPKI base64), or null. */
  author_key: string | null;
  /** Its key id, or null. */
  author_key_id: string | null;
  /** What the manifest grants it. */
  rights: ModuleRights;
}

/** What a module version is granted by its manifest. */
export interface ModuleRights {
  /** `net`, `read`, `write`, `env`, `import` as granted. */
  permissions: Manifest["permissions"];
  /** Core services (`services`). */
  services: string[];
  /** Push events. */
  events: string[];
  /** Routes carried for the queue. */
  transports: string[];
  /** Other modules' commands it may call, when the manifest names any. */
  calls?: unknown;
  /** Its commands other modules may call, when the manifest names any. */
  exports?: unknown;
}

/** A manifest's grants (`calls` and `exports` when the manifest has them). */
function rightsOf(manifest: Manifest): ModuleRights {
  const more = manifest as unknown as Record<string, unknown>;
  const rights: ModuleRights = {
    permissions: manifest.permissions,
    services: manifest.services,
    events: manifest.events,
    transports: manifest.transports,
  };
  if (more.calls !== undefined) rights.calls = more.calls;
  if (more.exports !== undefined) rights.exports = more.exports;
  return rights;
}

function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return 0;
  const sorted = [...samples].sort((a, b) => a - b);
  return Math.round(
    sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] * 1000,
  ) / 1000;
}

function unavailable(message: string): ProtocolError {
  return new ProtocolError(ErrorCode.MODULE_UNAVAILABLE, message);
}

/** Options of {@link ModuleLifecycle}. */
export interface LifecycleOptions {
  /** The versions. */
  table: ModuleTable;
  /** Starts and stops copies. */
  supervisor: Supervisor;
  /** The modules' folder (absolute): `<name>/<version>/module.json`. */
  root: string;
  /** The installed packages' folder (absolute), looked in first. */
  installed?: string;
  /** Logger. */
  log: Logger;
}

/** The admin's operations on module versions. */
export class ModuleLifecycle {
  readonly #table: ModuleTable;
  readonly #supervisor: Supervisor;
  readonly #root: string;
  readonly #installed?: string;
  readonly #log: Logger;

  /** Operate on the versions of `options.table`. */
  constructor(options: LifecycleOptions) {
    this.#table = options.table;
    this.#supervisor = options.supervisor;
    this.#root = options.root;
    this.#installed = options.installed;
    this.#log = options.log;
  }

  /** Every version with its state and figures. */
  list(): ModuleStatus[] {
    return [...this.#table.slots()].map((slot) => this.#status(slot)).sort((
      a,
      b,
    ) => a.name.localeCompare(b.name) || a.version.localeCompare(b.version));
  }

  #status(slot: Slot): ModuleStatus {
    const { name, version } = slot.manifest;
    return {
      name,
      version,
      state: slot.state,
      enabled: slot.enabled,
      default: this.#table.defaultOf(name) === version,
      isolation: slot.isolation,
      ...(slot.isolation === "remote"
        ? {
          instances: slot.instance instanceof RemotePool
            ? slot.instance.list()
            : [],
        }
        : {}),
      shipped: slot.shipped,
      commands: slot.manifest.commands,
      calls: slot.calls,
      errors: slot.errors,
      restarts: slot.restarts,
      hangs: slot.hangs,
      p50_ms: percentile(slot.latencies, 0.5),
      p99_ms: percentile(slot.latencies, 0.99),
      last_error: slot.lastError,
      storage_quota: slot.manifest.storageQuota,
      source: slot.origin ? "package" : slot.shipped ? "shipped" : "folder",
      author_key: slot.origin?.public_key ?? null,
      author_key_id: slot.origin?.key_id ?? null,
      rights: rightsOf(slot.manifest),
    };
  }

  /** A version's status, if it is known. */
  status(name: string, version: string): ModuleStatus | undefined {
    const slot = this.#table.get(name, version);
    return slot && this.#status(slot);
  }

  /** The folder of a version: an installed package's, else the modules' folder's. */
  #dirOf(name: string, version: string): string {
    if (this.#installed) {
      const dir = `${this.#installed}/${name}/${version}`;
      try {
        Deno.statSync(`${dir}/module.json`);
        return dir;
      } catch {
        // Not installed: the modules' folder.
      }
    }
    return `${this.#root}/${name}/${version}`;
  }

  #slot(name: string, version: string): Slot {
    const slot = this.#table.get(name, version);
    if (!slot) {
      throw new ProtocolError(
        ErrorCode.NOT_FOUND,
        `module ${name} ${version} is not known: load it first`,
      );
    }
    return slot;
  }

  /** Load a version from its folder (new on disk, or unloaded before) and start it. */
  async load(name: string, version: string): Promise<ModuleStatus> {
    const existing = this.#table.get(name, version);
    if (existing?.loaded) {
      throw new ProtocolError(
        ErrorCode.ALREADY_EXISTS,
        `module ${name} ${version} is already loaded`,
      );
    }
    let manifest: Manifest;
    try {
      manifest = await loadManifest(this.#dirOf(name, version));
    } catch (error) {
      throw new ProtocolError(
        ErrorCode.NOT_FOUND,
        error instanceof Error ? error.message : String(error),
      );
    }
    if (manifest.name !== name || manifest.version !== version) {
      throw new ProtocolError(
        ErrorCode.INVALID_PARAMETER,
        `the folder holds ${manifest.name} ${manifest.version}`,
      );
    }
    const slot = this.#table.add(manifest, {
      enabled: true,
      loaded: true,
      isolation: existing?.isolationSet ? existing.isolation : undefined,
    });
    await this.#table.persist(name);
    await this.#supervisor.launchOrThrow(slot);
    return this.#status(slot);
  }

  /** Stop a version and forget it until it is loaded again. */
  async unload(name: string, version: string): Promise<ModuleStatus> {
    const slot = this.#slot(name, version);
    slot.loaded = false;
    slot.state = "unloaded";
    this.#supervisor.cancelRestart(slot);
    await this.#supervisor.retire(slot);
    await this.#table.persist(name);
    return this.#status(slot);
  }

  /** Start a fresh copy with the code on disk; the old one finishes its calls. */
  async reload(name: string, version: string): Promise<ModuleStatus> {
    const slot = this.#slot(name, version);
    if (!slot.loaded || !slot.enabled) {
      throw unavailable(`module ${name} ${version} is ${slot.state}`);
    }
    try {
      slot.manifest = await loadManifest(slot.manifest.dir);
    } catch (error) {
      throw new ProtocolError(
        ErrorCode.INVALID_PARAMETER,
        error instanceof Error ? error.message : String(error),
      );
    }
    await this.#supervisor.launchOrThrow(slot);
    return this.#status(slot);
  }

  /** Let a version serve again. */
  async enable(name: string, version: string): Promise<ModuleStatus> {
    const slot = this.#slot(name, version);
    if (!slot.loaded) {
      throw unavailable(`module ${name} ${version} is unloaded: load it`);
    }
    if (!slot.enabled) {
      slot.enabled = true;
      slot.failures = 0;
      await this.#table.persist(name);
      await this.#supervisor.launchOrThrow(slot);
    }
    return this.#status(slot);
  }

  /** Stop serving a version (it stays loaded). */
  async disable(name: string, version: string): Promise<ModuleStatus> {
    const slot = this.#slot(name, version);
    slot.enabled = false;
    if (slot.loaded) slot.state = "disabled";
    this.#supervisor.cancelRestart(slot);
    await this.#table.persist(name);
    await this.#supervisor.retire(slot);
    return this.#status(slot);
  }

  /** Make a version the one requests without a version range get. */
  async setDefault(name: string, version: string): Promise<ModuleStatus> {
    const slot = this.#slot(name, version);
    this.#table.setDefault(name, version);
    await this.#table.persist(name);
    return this.#status(slot);
  }

  /** Make the previous default the default again (the one it replaced becomes the previous). */
  async rollback(name: string): Promise<ModuleStatus> {
    const previous = this.#table.previousOf(name);
    if (!previous) {
      throw new ProtocolError(
        ErrorCode.NOT_FOUND,
        `module ${name} has no previous default version to roll back to`,
      );
    }
    return await this.setDefault(name, previous);
  }

  /**
   * Choose worker, process or remote isolation; the running copy is
   * replaced (remote: by the instances that connect).
   */
  async setIsolation(
    name: string,
    version: string,
    isolation: Isolation,
  ): Promise<ModuleStatus> {
    const slot = this.#slot(name, version);
    slot.isolation = isolation;
    slot.isolationSet = true;
    slot.hangs = 0;
    if (isolation === "worker" && !slot.shipped) {
      this.#log.warn("module_trusted", {
        module: name,
        version,
        reason:
          "an admin placed a module not shipped with the server in a Worker of the server's process: it can signal the server, its memory is not capped and a loop in it cannot be stopped",
      });
    }
    await this.#table.persist(name);
    if (slot.loaded && slot.enabled) {
      await this.#supervisor.launchOrThrow(slot);
    }
    return this.#status(slot);
  }
}
