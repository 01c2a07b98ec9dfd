/**
 * The module host: loads module versions, routes client requests to them,
 * supervises them (restart with backoff, hang detection, process isolation
 * when a Worker hangs), serves their storage and push requests, and carries
 * out the admin's life-cycle commands — all without a server restart.
 *
 * Placement: a module shipped with the server (inside the `modules/` folder
 * beside main.ts) is trusted code and runs where its manifest says; every
 * other module runs in a capped subprocess, whatever its manifest says,
 * unless an admin places it in a Worker (explicit trust, logged). Before any
 * copy starts, its module graph is checked (isolation/imports.ts): a module
 * that imports what it may not load is refused, with the import named.
 *
 * It does not know sessions or federation: the server hands it a `push`
 * function.
 *
 * @module
 */

import type { Logger } from "../core/log/mod.ts";
import {
  type Caller,
  ErrorCode,
  type HandlerContext,
  ProtocolError,
} from "../core/protocol/mod.ts";
import type { Document } from "../core/wire/mod.ts";
import type {
  InboundDelivery,
  InboundResult,
} from "../core/federation/delivery.ts";
import {
  type DownReason,
  type HeartbeatOptions,
  ManifestMismatchError,
  ModuleInstance,
} from "./instance.ts";
import type { Channel } from "./isolation/channel.ts";
import { ImportPolicy, ImportRefusedError } from "./isolation/imports.ts";
import { startProcess } from "./isolation/process.ts";
import { startWorker } from "./isolation/worker.ts";
import {
  discoverManifests,
  type Isolation,
  loadManifest,
  type Manifest,
} from "./manifest.ts";
import {
  compareVersions,
  maxSatisfying,
  parseVersion,
  SemverError,
} from "./semver.ts";
import { importLegacyStore, storePath } from "./store.ts";
import { serveService, type ServiceImplementation } from "./services.ts";

/** Request fields that belong to the envelope, not to the module. */
const ENVELOPE = new Set([
  "command",
  "requestID",
  "module",
  "version",
  "user_token",
  "admin_token",
]);
/** Latency samples kept per version. */
const SAMPLES = 512;

/** Options of {@link ModuleHost}. */
export interface ModuleHostOptions {
  /** Folder holding `<name>/<version>/module.json`. */
  root: string;
  /** KV for the host's own state (which versions run, defaults). */
  kv: Deno.Kv;
  /**
   * Folder of the modules' own storage databases (created when missing);
   * absent: modules keep their data in `kv`, through the host (deployments
   * whose `kv` is a KV Connect database and that have no disk of their own).
   */
  stores?: string;
  /** Logger. */
  log: Logger;
  /** The core's services for modules (bridge/services.ts), implemented by the server. */
  services: ServiceImplementation;
  /** The server's deno.json (the npm packages of its import map are the ones modules may use). */
  denoConfig: string;
  /**
   * Folder of the modules shipped with the server, trusted to run in a Worker
   * when their manifest says so (default: `modules/` beside main.ts).
   */
  shipped?: string;
  /** Heartbeat timing. */
  heartbeat?: Partial<HeartbeatOptions>;
  /** First restart delay in milliseconds (doubles up to 30 s). */
  restartBaseMs?: number;
  /** Hangs in worker mode after which a version moves to process isolation (default 1). */
  hangsBeforeProcess?: number;
}

/** What admins see of one module version. */
export interface ModuleStatus {
  /** Module name. */
  name: string;
  /** Version. */
  version: string;
  /** `running`, `starting`, `restarting`, `refused`, `disabled` or `unloaded`. */
  state: string;
  /** Whether it serves requests when running. */
  enabled: boolean;
  /** Whether it is the default version of its module. */
  default: boolean;
  /** `worker` or `process`. */
  isolation: Isolation;
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
}

interface PersistedState {
  default?: string;
  versions: Record<
    string,
    { enabled: boolean; loaded: boolean; isolation?: Isolation }
  >;
}

interface Slot {
  manifest: Manifest;
  shipped: boolean;
  enabled: boolean;
  loaded: boolean;
  isolation: Isolation;
  isolationSet: boolean;
  instance?: ModuleInstance;
  state:
    | "running"
    | "starting"
    | "restarting"
    | "refused"
    | "disabled"
    | "unloaded";
  restarts: number;
  hangs: number;
  failures: number;
  upSince: number;
  restartTimer?: ReturnType<typeof setTimeout>;
  lastError: string;
  calls: number;
  errors: number;
  latencies: number[];
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

/** Runs modules. */
export class ModuleHost {
  readonly #options: ModuleHostOptions;
  readonly #log: Logger;
  readonly #heartbeat: HeartbeatOptions;
  readonly #modules = new Map<string, Map<string, Slot>>();
  readonly #defaults = new Map<string, string>();
  #policy?: Promise<ImportPolicy>;
  #closed = false;

  /** Create a host; call {@link start} to load modules. */
  constructor(options: ModuleHostOptions) {
    this.#options = options;
    this.#log = options.log.child({ part: "modules" });
    this.#heartbeat = {
      intervalMs: 1000,
      toleranceMs: 3000,
      startMs: 15_000,
      ...options.heartbeat,
    };
  }

  /** Discover modules and start every enabled version. */
  async start(): Promise<void> {
    const { manifests, errors } = await discoverManifests(this.#root);
    for (const error of errors) {
      this.#log.error("module_manifest_invalid", { error });
    }
    const stores = this.#stores;
    if (stores) {
      await Deno.mkdir(stores, { recursive: true });
      for (const name of new Set(manifests.map((m) => m.name))) {
        const moved = await importLegacyStore(this.#options.kv, {
          name,
          path: storePath(stores, name),
        });
        if (moved > 0) {
          this.#log.info("module_storage_moved", {
            module: name,
            entries: moved,
          });
        }
      }
    }
    for (const manifest of manifests) {
      const state = await this.#state(manifest.name);
      if (state.default) this.#defaults.set(manifest.name, state.default);
      const saved = state.versions[manifest.version];
      const slot = this.#addSlot(manifest, saved);
      if (slot.loaded && slot.enabled) this.#launch(slot);
    }
    await Promise.all(
      [...this.#slots()].filter((s) => s.state === "starting").map((s) =>
        this.#waitStarted(s, this.#heartbeat.startMs)
      ),
    );
  }

  #addSlot(
    manifest: Manifest,
    saved?: PersistedState["versions"][string],
  ): Slot {
    let versions = this.#modules.get(manifest.name);
    if (!versions) this.#modules.set(manifest.name, versions = new Map());
    const shipped = this.#isShipped(manifest);
    const slot: Slot = {
      manifest,
      shipped,
      enabled: saved?.enabled ?? true,
      loaded: saved?.loaded ?? true,
      // Only code shipped with the server runs in a Worker without an admin's say.
      isolation: saved?.isolation ?? (shipped ? manifest.isolation : "process"),
      isolationSet: saved?.isolation !== undefined,
      state: "disabled",
      restarts: 0,
      hangs: 0,
      failures: 0,
      upSince: 0,
      lastError: "",
      calls: 0,
      errors: 0,
      latencies: [],
    };
    if (!slot.loaded) slot.state = "unloaded";
    versions.set(manifest.version, slot);
    return slot;
  }

  /** Whether a module's folder is inside the folder of shipped modules (real paths). */
  #isShipped(manifest: Manifest): boolean {
    const shipped = this.#options.shipped ??
      new URL("../modules", import.meta.url).pathname;
    try {
      const root = Deno.realPathSync(shipped);
      return Deno.realPathSync(manifest.dir).startsWith(`${root}/`);
    } catch {
      return false;
    }
  }

  /** What modules may load; listed once (the SDK's graph). */
  #imports(): Promise<ImportPolicy> {
    this.#policy ??= ImportPolicy.create(this.#options.denoConfig).catch(
      (error) => {
        this.#policy = undefined;
        throw error;
      },
    );
    return this.#policy;
  }

  *#slots(): Iterable<Slot> {
    for (const versions of this.#modules.values()) yield* versions.values();
  }

  async #waitStarted(slot: Slot, ms: number): Promise<void> {
    const end = Date.now() + ms;
    while (slot.state === "starting" && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async #state(name: string): Promise<PersistedState> {
    return (await this.#options.kv.get<PersistedState>(["module_state", name]))
      .value ??
      { versions: {} };
  }

  async #persist(name: string): Promise<void> {
    const versions = this.#modules.get(name);
    const state: PersistedState = {
      default: this.#defaults.get(name),
      versions: {},
    };
    for (const [version, slot] of versions ?? []) {
      state.versions[version] = {
        enabled: slot.enabled,
        loaded: slot.loaded,
        isolation: slot.isolationSet ? slot.isolation : undefined,
      };
    }
    await this.#options.kv.set(["module_state", name], state);
  }

  /** The modules' folder, absolute (module graphs and permissions name absolute paths). */
  get #root(): string {
    const root = this.#options.root;
    return root.startsWith("/") ? root : `${Deno.cwd()}/${root}`;
  }

  /** The folder of the stores, absolute (permissions name absolute paths). */
  get #stores(): string | undefined {
    const dir = this.#options.stores;
    if (dir === undefined) return undefined;
    return dir.startsWith("/") ? dir : `${Deno.cwd()}/${dir}`;
  }

  /** A module's own database, or undefined when modules store in the core's. */
  #storePath(name: string): string | undefined {
    const stores = this.#stores;
    return stores === undefined ? undefined : storePath(stores, name);
  }

  /** Check a module's code, then start it where the slot says. */
  async #channel(slot: Slot): Promise<Channel> {
    const store = this.#storePath(slot.manifest.name);
    const imports = await (await this.#imports()).check(slot.manifest);
    return slot.isolation === "process"
      ? await startProcess(slot.manifest, { imports, log: this.#log, store })
      : startWorker(slot.manifest, store);
  }

  /** Start an instance for a slot; swap it in when ready. */
  async #launch(slot: Slot): Promise<ModuleInstance | undefined> {
    if (slot.state !== "running") slot.state = "starting";
    let instance: ModuleInstance;
    try {
      const channel = await this.#channel(slot);
      instance = new ModuleInstance(slot.manifest, channel, {
        isolation: slot.isolation,
        serve: (caller, method, args) =>
          serveService(
            this.#options.services,
            {
              coreStorage: this.#stores === undefined,
            },
            caller,
            method,
            args,
          ),
        log: this.#log,
        heartbeat: this.#heartbeat,
        storePath: this.#storePath(slot.manifest.name),
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
      if (error instanceof ManifestMismatchError) {
        this.#refuse(slot, error);
        return undefined;
      }
      this.#failed(
        slot,
        error instanceof Error ? error.message : String(error),
      );
      return undefined;
    }
    if (this.#closed || !slot.enabled || !slot.loaded) {
      instance.stop();
      return undefined;
    }
    const old = slot.instance;
    slot.instance = instance;
    slot.state = "running";
    slot.upSince = Date.now();
    if (old && old !== instance) {
      old.drained(slot.manifest.timeoutMs).then(() => old.stop());
    }
    this.#log.info("module_started", {
      module: slot.manifest.name,
      version: slot.manifest.version,
      isolation: slot.isolation,
    });
    return instance;
  }

  /**
   * The module's code imports what it may not load, or its handlers differ
   * from its manifest: no restart until an admin acts.
   */
  #refuse(slot: Slot, error: ImportRefusedError | ManifestMismatchError): void {
    slot.lastError = error.message;
    if (!slot.instance) slot.state = "refused";
    this.#log.error("module_refused", {
      module: slot.manifest.name,
      version: slot.manifest.version,
      error: error.message,
    });
  }

  #failed(slot: Slot, detail: string): void {
    slot.lastError = detail;
    this.#log.error("module_start_failed", {
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
      const limit = this.#options.hangsBeforeProcess ?? 1;
      if (slot.isolation === "worker" && slot.hangs >= limit) {
        // For good: its abandoned thread still spins; the next one could too.
        slot.isolation = "process";
        slot.isolationSet = true;
        this.#persist(slot.manifest.name).catch(() => {});
        this.#log.warn("module_isolation_changed", {
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
    if (Date.now() - slot.upSince > 60_000) slot.failures = 0;
    const base = this.#options.restartBaseMs ?? 100;
    const delay = Math.min(30_000, base * 2 ** slot.failures);
    slot.failures++;
    slot.state = "restarting";
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = undefined;
      if (this.#closed || !slot.enabled || !slot.loaded) return;
      slot.restarts++;
      this.#launch(slot);
    }, delay);
  }

  #pick(name: string, range?: string): Slot {
    const versions = this.#modules.get(name);
    if (!versions || versions.size === 0) {
      throw unavailable(`no module "${name.slice(0, 64)}"`);
    }
    const usable = [...versions.values()].filter((s) => s.enabled && s.loaded);
    if (usable.length === 0) throw unavailable(`module "${name}" is disabled`);
    let chosen: string | undefined;
    if (range !== undefined) {
      try {
        chosen = maxSatisfying(usable.map((s) => s.manifest.version), range);
      } catch (error) {
        if (error instanceof SemverError) {
          throw new ProtocolError(
            ErrorCode.INVALID_PARAMETER,
            `parameter "version": ${error.message}`,
            {
              parameter: "version",
            },
          );
        }
        throw error;
      }
      if (!chosen) {
        throw unavailable(
          `module "${name}" has no enabled version matching ${range}`,
        );
      }
    } else {
      const preferred = this.#defaults.get(name);
      chosen = preferred && usable.some((s) => s.manifest.version === preferred)
        ? preferred
        : usable.map((s) => s.manifest.version).sort((a, b) =>
          compareVersions(parseVersion(b), parseVersion(a))
        )[0];
    }
    return versions.get(chosen)!;
  }

  /** Route a client request naming a module (the dispatcher's module router). */
  async route(request: Document, ctx: HandlerContext): Promise<unknown> {
    const name = String(request.module);
    if (request.version !== undefined && typeof request.version !== "string") {
      throw new ProtocolError(
        ErrorCode.INVALID_PARAMETER,
        'parameter "version" must be of type string',
        {
          parameter: "version",
        },
      );
    }
    const slot = this.#pick(name, request.version as string | undefined);
    const command = String(request.command);
    if (!slot.manifest.commands.includes(command)) {
      throw new ProtocolError(
        ErrorCode.UNKNOWN_COMMAND,
        `module ${name} ${slot.manifest.version} has no command "${
          command.slice(0, 64)
        }"`,
      );
    }
    const instance = slot.instance;
    if (!instance || instance.state !== "ready") {
      throw unavailable(
        `module ${name} ${slot.manifest.version} is ${slot.state}; try again shortly`,
      );
    }
    const params: Document = {};
    for (const [key, value] of Object.entries(request)) {
      if (!ENVELOPE.has(key)) params[key] = value;
    }
    const caller = ctx.caller as Caller;
    const started = performance.now();
    slot.calls++;
    try {
      return await instance.call(command, {
        address: caller.name,
        session: ctx.session.id,
      }, params);
    } catch (error) {
      slot.errors++;
      throw error;
    } finally {
      slot.latencies.push(performance.now() - started);
      if (slot.latencies.length > SAMPLES) slot.latencies.shift();
    }
  }

  /**
   * Hand a delivery from another server (or a bounce) to a module's
   * `inbound` handler, on its default version.
   */
  async inbound(
    name: string,
    delivery: InboundDelivery,
  ): Promise<InboundResult> {
    const slot = this.#pick(name);
    const instance = slot.instance;
    if (!instance || instance.state !== "ready") {
      throw unavailable(`module ${name} is ${slot.state}`);
    }
    if (!instance.federates) {
      throw unavailable(
        `module ${name} takes no deliveries from other servers`,
      );
    }
    const caller = {
      address: delivery.from,
      session: `peer:${delivery.peer ?? "local"}`,
    };
    return await instance.inbound(caller, delivery);
  }

  /** Modules and versions clients may use, for `info`. */
  available(): { name: string; versions: string[]; default?: string }[] {
    const out = [];
    for (const [name, versions] of this.#modules) {
      const usable = [...versions.values()].filter((s) => s.enabled && s.loaded)
        .map((s) => s.manifest.version);
      if (usable.length === 0) continue;
      out.push({ name, versions: usable, default: this.#defaults.get(name) });
    }
    return out;
  }

  /** Every version with its state and figures. */
  list(): ModuleStatus[] {
    const out: ModuleStatus[] = [];
    for (const [name, versions] of this.#modules) {
      for (const [version, slot] of versions) {
        out.push({
          name,
          version,
          state: slot.state,
          enabled: slot.enabled,
          default: this.#defaults.get(name) === version,
          isolation: slot.isolation,
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
        });
      }
    }
    return out.sort((a, b) =>
      a.name.localeCompare(b.name) || a.version.localeCompare(b.version)
    );
  }

  #slot(name: string, version: string): Slot {
    const slot = this.#modules.get(name)?.get(version);
    if (!slot) {
      throw new ProtocolError(
        ErrorCode.NOT_FOUND,
        `module ${name} ${version} is not known: load it first`,
      );
    }
    return slot;
  }

  async #startAndCheck(slot: Slot): Promise<void> {
    const instance = await this.#launch(slot);
    if (!instance) {
      throw unavailable(
        `module ${slot.manifest.name} ${slot.manifest.version} ${
          slot.state === "refused" ? "was refused" : "failed to start"
        }: ${slot.lastError}`,
      );
    }
  }

  /** Load a version from its folder (new on disk, or unloaded before) and start it. */
  async load(name: string, version: string): Promise<ModuleStatus> {
    const existing = this.#modules.get(name)?.get(version);
    if (existing?.loaded) {
      throw new ProtocolError(
        ErrorCode.ALREADY_EXISTS,
        `module ${name} ${version} is already loaded`,
      );
    }
    let manifest: Manifest;
    try {
      manifest = await loadManifest(`${this.#root}/${name}/${version}`);
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
    const slot = this.#addSlot(manifest, {
      enabled: true,
      loaded: true,
      isolation: existing?.isolationSet ? existing.isolation : undefined,
    });
    await this.#persist(name);
    await this.#startAndCheck(slot);
    return this.#status(slot);
  }

  #status(slot: Slot): ModuleStatus {
    return this.list().find((s) =>
      s.name === slot.manifest.name && s.version === slot.manifest.version
    )!;
  }

  /** Stop a version and forget it until it is loaded again. */
  async unload(name: string, version: string): Promise<ModuleStatus> {
    const slot = this.#slot(name, version);
    slot.loaded = false;
    slot.state = "unloaded";
    clearTimeout(slot.restartTimer);
    slot.restartTimer = undefined;
    await this.#retire(slot);
    await this.#persist(name);
    return this.#status(slot);
  }

  async #retire(slot: Slot): Promise<void> {
    const old = slot.instance;
    slot.instance = undefined;
    if (old) {
      await old.drained(slot.manifest.timeoutMs);
      old.stop();
    }
  }

  /** Start a fresh instance with the code on disk; the old one finishes its calls. */
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
    await this.#startAndCheck(slot);
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
      await this.#persist(name);
      await this.#startAndCheck(slot);
    }
    return this.#status(slot);
  }

  /** Stop serving a version (it stays loaded). */
  async disable(name: string, version: string): Promise<ModuleStatus> {
    const slot = this.#slot(name, version);
    slot.enabled = false;
    if (slot.loaded) slot.state = "disabled";
    clearTimeout(slot.restartTimer);
    slot.restartTimer = undefined;
    await this.#persist(name);
    await this.#retire(slot);
    return this.#status(slot);
  }

  /** Make a version the one requests without a version range get. */
  async setDefault(name: string, version: string): Promise<ModuleStatus> {
    const slot = this.#slot(name, version);
    this.#defaults.set(name, version);
    await this.#persist(name);
    return this.#status(slot);
  }

  /** Choose worker or process isolation; the running instance is replaced. */
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
    await this.#persist(name);
    if (slot.loaded && slot.enabled) await this.#startAndCheck(slot);
    return this.#status(slot);
  }

  /** Stop every module. */
  async close(): Promise<void> {
    this.#closed = true;
    const stops = [];
    for (const slot of this.#slots()) {
      clearTimeout(slot.restartTimer);
      stops.push(this.#retire(slot));
    }
    await Promise.all(stops);
  }
}
