/**
 * The module host: finds the modules, and puts together the parts that run
 * them — the table of versions (table.ts), the supervisor that starts and
 * restarts copies (supervisor.ts), the router that picks the version for a
 * call (router.ts), the admin's life-cycle operations (lifecycle.ts) and the
 * core's services for modules (services.ts) — all without a server restart.
 *
 * Placement: a module shipped with the server (inside the `modules/` folder
 * beside main.ts) is trusted code and runs where its manifest says; every
 * other module runs in a capped subprocess, whatever its manifest says,
 * unless an admin places it in a Worker (explicit trust, logged). Before any
 * copy starts, its module graph is checked (isolation/imports.ts): a module
 * that imports what it may not load is refused, with the import named.
 *
 * It does not know sessions or federation: the server hands it the
 * implementation of the core's services.
 *
 * @module
 */

import type { Logger } from "../core/log/mod.ts";
import { ModuleStateStore, moveModuleData } from "../kv/modules.ts";
import { type HeartbeatOptions, ModuleInstance } from "./instance.ts";
import { ImportPolicy } from "./isolation/imports.ts";
import { startProcess } from "./isolation/process.ts";
import { startWorker } from "./isolation/worker.ts";
import { ModuleLifecycle } from "./lifecycle.ts";
import { discoverManifests, type Manifest } from "./manifest.ts";
import { type ModuleObserver, ModuleRouter } from "./router.ts";
import { ErrorCode, ProtocolError } from "../core/protocol/mod.ts";
import {
  serveService,
  type ServiceCaller,
  type ServiceImplementation,
} from "./services.ts";
import type { LinkHost, LinkInfo } from "./remote/link.ts";
import { RemotePool } from "./remote/pool.ts";
import { LINK_MAX_INSTANCES, type LinkGrant } from "./remote/protocol.ts";
import { KvStorage } from "./sdk/storage.ts";
import type { Channel } from "./isolation/channel.ts";
import { Supervisor } from "./supervisor.ts";
import { ModuleTable, type Slot } from "./table.ts";
import { PackageInstaller } from "./packages.ts";
import { PackageStore } from "../kv/packages.ts";

export type { ModuleStatus } from "./lifecycle.ts";

/** Options of {@link ModuleHost}. */
export interface ModuleHostOptions {
  /** Folder holding `<name>/<version>/module.json`. */
  root: string;
  /** Folder of installed packages, `<name>/<version>/` (created when missing); absent: none can be installed. */
  installed?: string;
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
  /** Told of calls, restarts and denials (the server's metrics). */
  observer?: ModuleObserver;
  /** Modules not started at start (shown unloaded; an admin may load them). */
  off?: string[];
}

/** An absolute path (module graphs and permissions name absolute paths). */
function absolute(path: string): string {
  return path.startsWith("/") ? path : `${Deno.cwd()}/${path}`;
}

/** Runs modules. */
export class ModuleHost implements LinkHost {
  readonly #options: ModuleHostOptions;
  readonly #log: Logger;
  readonly #root: string;
  readonly #stores?: string;
  readonly #table: ModuleTable;
  readonly #supervisor: Supervisor;
  readonly #heartbeat: HeartbeatOptions;
  #policy?: Promise<ImportPolicy>;
  /** Remote modules' own databases, opened by the host (`files` storage). */
  readonly #remoteStores = new Map<
    string,
    Promise<{ kv: Deno.Kv; storage: KvStorage }>
  >();
  /** The core's services for remote instances (their storage runs here). */
  readonly #serveRemote: (
    caller: ServiceCaller,
    method: string,
    args: unknown[],
  ) => unknown;
  /** Routes client calls and deliveries to versions. */
  readonly router: ModuleRouter;
  /** The admin's life-cycle operations. */
  readonly lifecycle: ModuleLifecycle;
  /** Installs signed packages (absent without an `installed` folder). */
  readonly packages?: PackageInstaller;

  /** Create a host; call {@link start} to load modules. */
  constructor(options: ModuleHostOptions) {
    this.#options = options;
    this.#log = options.log.child({ part: "modules" });
    this.#root = absolute(options.root);
    this.#stores = options.stores === undefined
      ? undefined
      : absolute(options.stores);
    this.#heartbeat = {
      intervalMs: 1000,
      toleranceMs: 3000,
      startMs: 15_000,
      ...options.heartbeat,
    };
    this.#table = new ModuleTable(
      new ModuleStateStore(options.kv),
      (manifest) => this.#isShipped(manifest),
    );
    const coreStorage = this.#stores === undefined;
    this.#supervisor = new Supervisor({
      table: this.#table,
      log: this.#log,
      open: (slot) => this.#open(slot),
      serve: (caller, method, args) =>
        this.#serve(options.services, coreStorage, caller, method, args),
      storePath: (name) => this.#storePath(name),
      heartbeat: this.#heartbeat,
      restartBaseMs: options.restartBaseMs ?? 100,
      hangsBeforeProcess: options.hangsBeforeProcess ?? 1,
      observer: options.observer,
    });
    // A remote module has no file here to open: its storage runs in the
    // host, on its own database (or the core's, with `core` storage).
    const remoteServices: ServiceImplementation = this.#stores === undefined
      ? options.services
      : { ...options.services, ...this.#fileStorage() };
    this.#serveRemote = (caller, method, args) =>
      this.#serve(remoteServices, true, caller, method, args);
    this.router = new ModuleRouter(this.#table, options.observer);
    this.lifecycle = new ModuleLifecycle({
      table: this.#table,
      supervisor: this.#supervisor,
      root: this.#root,
      installed: options.installed && absolute(options.installed),
      log: this.#log,
    });
    if (options.installed) {
      this.packages = new PackageInstaller({
        dir: absolute(options.installed),
        modulesDir: this.#root,
        store: new PackageStore(options.kv),
        table: this.#table,
        lifecycle: this.lifecycle,
        serving: (name) => {
          try {
            return this.router.pick(name).manifest.version;
          } catch {
            return undefined;
          }
        },
        log: this.#log,
      });
    }
  }

  /** Discover modules and start every enabled version. */
  async start(): Promise<void> {
    const { manifests, errors } = await discoverManifests(this.#root);
    if (this.#options.installed) {
      const installed = absolute(this.#options.installed);
      await Deno.mkdir(installed, { recursive: true });
      await this.packages!.restoreOrigins();
      const found = await discoverManifests(installed);
      manifests.push(...found.manifests);
      errors.push(...found.errors);
    }
    for (const error of errors) {
      this.#log.error("module_manifest_invalid", { error });
    }
    if (this.#stores) {
      await Deno.mkdir(this.#stores, { recursive: true });
      for (const name of new Set(manifests.map((m) => m.name))) {
        const moved = await moveModuleData(
          this.#options.kv,
          name,
          this.#storePath(name)!,
        );
        if (moved > 0) {
          this.#log.info("module_storage_moved", {
            module: name,
            entries: moved,
          });
        }
      }
    }
    const launches = [];
    const off = new Set(this.#options.off ?? []);
    for (const manifest of manifests) {
      const slot = await this.#table.restore(manifest);
      if (off.has(manifest.name)) {
        // Not persisted: the next start without it in the list runs it.
        slot.loaded = false;
        slot.state = "unloaded";
        continue;
      }
      if (slot.loaded && slot.enabled) {
        launches.push(this.#supervisor.launch(slot));
      }
    }
    await Promise.all(launches);
  }

  /** Stop every module. */
  async close(): Promise<void> {
    await this.#supervisor.close();
    for (const storage of this.#remoteStores.values()) {
      storage.then(({ kv }) => kv.close()).catch(() => {});
    }
    this.#remoteStores.clear();
  }

  /** A module's call of a core service, checked; denials counted. */
  #serve(
    services: ServiceImplementation,
    coreStorage: boolean,
    caller: ServiceCaller,
    method: string,
    args: unknown[],
  ): unknown {
    try {
      return serveService(services, { coreStorage }, caller, method, args);
    } catch (error) {
      if (
        error instanceof ProtocolError && error.code === ErrorCode.FORBIDDEN
      ) {
        this.#options.observer?.denied(caller.manifest.name);
      }
      throw error;
    }
  }

  /** The storage services on each remote module's own database, opened here. */
  #fileStorage(): Pick<
    ServiceImplementation,
    Extract<keyof ServiceImplementation, `storage.${string}`>
  > {
    const storage = ({ name, storageQuota }: Manifest): Promise<KvStorage> => {
      let opened = this.#remoteStores.get(name);
      if (!opened) {
        opened = Deno.openKv(this.#storePath(name)).then((kv) => ({
          kv,
          storage: new KvStorage(kv, name, storageQuota),
        }));
        this.#remoteStores.set(name, opened);
      }
      return opened.then(({ storage }) => storage);
    };
    return {
      "storage.get": async ({ manifest }, key) =>
        (await storage(manifest)).get(key),
      "storage.getMany": async ({ manifest }, keys) =>
        (await storage(manifest)).getMany(keys),
      "storage.set": async ({ manifest }, key, value) =>
        (await storage(manifest)).set(key, value),
      "storage.delete": async ({ manifest }, key) =>
        (await storage(manifest)).delete(key),
      "storage.list": async ({ manifest }, prefix, options) =>
        (await storage(manifest)).list(prefix, options),
      "storage.atomic": async ({ manifest }, ops) =>
        (await storage(manifest)).atomic(ops),
      "storage.commit": async ({ manifest }, ops) =>
        (await storage(manifest)).commit(ops),
    };
  }

  /** The pool of a version placed remote, or MODULE_UNAVAILABLE saying why not. */
  #pool(name: string, version: string): { slot: Slot; pool: RemotePool } {
    const slot = this.#table.get(name, version);
    const pool = slot?.instance;
    const why = !slot
      ? "is not known to this server"
      : !slot.loaded
      ? "is unloaded"
      : !slot.enabled
      ? "is disabled"
      : slot.isolation !== "remote" || !(pool instanceof RemotePool)
      ? `runs in a ${slot.isolation} here, not remote`
      : pool.size >= LINK_MAX_INSTANCES
      ? `has ${LINK_MAX_INSTANCES} instances connected already`
      : undefined;
    if (why) {
      throw new ProtocolError(
        ErrorCode.MODULE_UNAVAILABLE,
        `module ${name.slice(0, 64)} ${version.slice(0, 32)} ${why}`,
      );
    }
    return { slot: slot!, pool: pool as RemotePool };
  }

  /** What a remote instance of a version is granted; throws when none may join. */
  admit(name: string, version: string): LinkGrant {
    const { manifest } = this.#pool(name, version).slot;
    return {
      module: manifest.name,
      version: manifest.version,
      commands: manifest.commands,
      events: manifest.events,
      services: manifest.services,
      timeout_ms: manifest.timeoutMs,
    };
  }

  /**
   * Run a logged-in link as an instance of a remote version, under the
   * server's copy of its manifest; it joins the pool once started.
   */
  async attach(
    name: string,
    version: string,
    channel: Channel,
    info: LinkInfo,
  ): Promise<void> {
    let placed: { slot: Slot; pool: RemotePool };
    try {
      placed = this.#pool(name, version);
    } catch (error) {
      channel.stop();
      throw error;
    }
    const { slot, pool } = placed;
    const instance = new ModuleInstance(slot.manifest, channel, {
      isolation: "remote",
      serve: this.#serveRemote,
      log: this.#log,
      heartbeat: this.#heartbeat,
      denied: () => this.#options.observer?.denied(name),
    });
    instance.onDown((reason, detail) => {
      pool.remove(instance);
      if (slot.instance === pool && pool.size === 0) slot.state = "waiting";
      if (reason !== "stopped") {
        slot.lastError =
          `an instance from ${info.address} went down: ${reason}: ${detail}`;
      }
    });
    await instance.start();
    if (pool.stopped || slot.instance !== pool) {
      instance.stop();
      return;
    }
    pool.add(instance, info);
    slot.state = "running";
    this.#log.info("module_started", {
      module: name,
      version,
      isolation: "remote",
      transport: info.transport,
      ip: info.address,
      instances: pool.size,
    });
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

  /** A module's own database, or undefined when modules store in the core's. */
  #storePath(name: string): string | undefined {
    return this.#stores === undefined
      ? undefined
      : `${this.#stores}/${name}.kv`;
  }

  /** Check a module's code, then start it where the slot says. */
  async #open(slot: Slot): Promise<Channel> {
    const store = this.#storePath(slot.manifest.name);
    const policy = await this.#imports();
    const imports = await policy.check(slot.manifest);
    if (slot.isolation === "worker") return startWorker(slot.manifest, store);
    await policy.fetchPackages(slot.manifest, imports);
    return await startProcess(slot.manifest, {
      imports,
      log: this.#log,
      store,
    });
  }
}
