/**
 * The table of module versions the host knows: one slot per version, with
 * its manifest, the admin's choices (persisted in the core's database), its
 * state and its figures. The supervisor, the router and the life-cycle
 * operations all work on it.
 *
 * @module
 */

import type { ModuleStateRecord, ModuleStateStore } from "../kv/modules.ts";
import type { ModuleCopy } from "./instance.ts";
import type { Isolation, Manifest } from "./manifest.ts";

/** The state of a slot, as admins see it. */
export type SlotState =
  | "running"
  | "starting"
  | "waiting"
  | "restarting"
  | "refused"
  | "disabled"
  | "unloaded";

/** Where an installed package came from (absent: a folder put on disk). */
export interface SlotOrigin {
  /** The signer's Ed25519 key (SPKI base64), or null when installed unsigned. */
  public_key: string | null;
  /** Its key id, or null. */
  key_id: string | null;
  /** SHA-256 of the package. */
  sha256: string;
}

/** One module version. */
export interface Slot {
  /** Its manifest (read again on reload). */
  manifest: Manifest;
  /** Shipped with the server (trusted to run in a Worker). */
  shipped: boolean;
  /** The package it was installed from, if it was. */
  origin?: SlotOrigin;
  /** Whether it serves requests when running. */
  enabled: boolean;
  /** Whether it is loaded at all. */
  loaded: boolean;
  /** Where it runs. */
  isolation: Isolation;
  /** Whether an admin (or a hang) chose the isolation. */
  isolationSet: boolean;
  /** The running copy (or, remote, the pool of connected instances). */
  instance?: ModuleCopy;
  /** State. */
  state: SlotState;
  /** Restarts after a crash or hang. */
  restarts: number;
  /** Times it stopped answering. */
  hangs: number;
  /** Failures in a row (the restart backoff). */
  failures: number;
  /** When the running copy started (epoch ms). */
  upSince: number;
  /** The pending restart. */
  restartTimer?: ReturnType<typeof setTimeout>;
  /** The last failure, in words. */
  lastError: string;
  /** Calls answered. */
  calls: number;
  /** Calls answered with an error. */
  errors: number;
  /** Latest call latencies in milliseconds. */
  latencies: number[];
}

/** Module versions by name, the admin's default versions, and their persistence. */
export class ModuleTable {
  readonly #store: ModuleStateStore;
  readonly #isShipped: (manifest: Manifest) => boolean;
  readonly #modules = new Map<string, Map<string, Slot>>();
  readonly #defaults = new Map<string, string>();
  readonly #previous = new Map<string, string>();
  readonly #origins = new Map<string, SlotOrigin>();

  /** A table persisted in `store`; `isShipped` tells trusted code. */
  constructor(
    store: ModuleStateStore,
    isShipped: (manifest: Manifest) => boolean,
  ) {
    this.#store = store;
    this.#isShipped = isShipped;
  }

  /** Add (or replace) the slot of a manifest's version, with saved choices. */
  add(
    manifest: Manifest,
    saved?: ModuleStateRecord["versions"][string],
  ): Slot {
    let versions = this.#modules.get(manifest.name);
    if (!versions) this.#modules.set(manifest.name, versions = new Map());
    const shipped = this.#isShipped(manifest);
    const slot: Slot = {
      manifest,
      shipped,
      origin: this.#origins.get(`${manifest.name} ${manifest.version}`),
      enabled: saved?.enabled ?? true,
      loaded: saved?.loaded ?? true,
      // Only code shipped with the server runs in a Worker without an
      // admin's say; a remote module runs on its own machine, not here.
      isolation: saved?.isolation ??
        (shipped || manifest.isolation === "remote"
          ? manifest.isolation
          : "process"),
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

  /** Add a discovered manifest's version with what was persisted for it. */
  async restore(manifest: Manifest): Promise<Slot> {
    const state = await this.#store.get(manifest.name);
    if (state.default) this.#defaults.set(manifest.name, state.default);
    if (state.previous) this.#previous.set(manifest.name, state.previous);
    return this.add(manifest, state.versions[manifest.version]);
  }

  /** Record the package a version is installed from (before its slot is added). */
  setOrigin(name: string, version: string, origin: SlotOrigin): void {
    this.#origins.set(`${name} ${version}`, origin);
  }

  /** One version's slot, if known. */
  get(name: string, version: string): Slot | undefined {
    return this.#modules.get(name)?.get(version);
  }

  /** The versions of a module. */
  versions(name: string): Slot[] {
    return [...this.#modules.get(name)?.values() ?? []];
  }

  /** Names of the known modules. */
  names(): string[] {
    return [...this.#modules.keys()];
  }

  /** Every slot. */
  *slots(): Iterable<Slot> {
    for (const versions of this.#modules.values()) yield* versions.values();
  }

  /** The admin's default version of a module. */
  defaultOf(name: string): string | undefined {
    return this.#defaults.get(name);
  }

  /** The default before the last change, what a rollback returns to. */
  previousOf(name: string): string | undefined {
    return this.#previous.get(name);
  }

  /** Make `version` the default of its module, remembering the one before (persist to keep it). */
  setDefault(name: string, version: string): void {
    const current = this.#defaults.get(name);
    if (current === version) return;
    if (current) this.#previous.set(name, current);
    this.#defaults.set(name, version);
  }

  /** Keep the admin's choices of a module across restarts. */
  async persist(name: string): Promise<void> {
    const state: ModuleStateRecord = {
      default: this.#defaults.get(name),
      previous: this.#previous.get(name),
      versions: {},
    };
    for (const slot of this.versions(name)) {
      state.versions[slot.manifest.version] = {
        enabled: slot.enabled,
        loaded: slot.loaded,
        isolation: slot.isolationSet ? slot.isolation : undefined,
      };
    }
    await this.#store.put(name, state);
  }
}
