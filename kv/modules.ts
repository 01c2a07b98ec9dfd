/**
 * The module host's records in the core's database: which versions of a
 * module run and how (its persisted state), and the move of a module's data
 * out of the core's database into its own.
 *
 * @module
 */

import { keys } from "./records.ts";

/** Where a module version runs. */
export type ModuleIsolation = "worker" | "process" | "remote";

/** An admin's choices for one module, kept across restarts. */
export interface ModuleStateRecord {
  /** The default version, when an admin chose one. */
  default?: string;
  /** The default before the last change (what a rollback returns to). */
  previous?: string;
  /** Per version: whether it serves and is loaded, and an admin-chosen placement. */
  versions: Record<
    string,
    { enabled: boolean; loaded: boolean; isolation?: ModuleIsolation }
  >;
}

/** The persisted state of modules. */
export class ModuleStateStore {
  readonly #kv: Deno.Kv;

  /** Wrap an open KV. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /** The state of module `name` (empty when nothing was chosen). */
  async get(name: string): Promise<ModuleStateRecord> {
    return (await this.#kv.get<ModuleStateRecord>(keys.moduleState(name)))
      .value ?? { versions: {} };
  }

  /** Replace the state of module `name`. */
  async put(name: string, state: ModuleStateRecord): Promise<void> {
    await this.#kv.set(keys.moduleState(name), state);
  }
}

/**
 * Move a module's data from the core database (`AMTP_MODULE_STORAGE=core`,
 * or servers before module databases) into its own database at `path`:
 * everything is copied first, then deleted from the core's. Safe to run again
 * after a crash (the copy repeats with the same values) and a no-op when
 * there is nothing to move. Returns the number of entries moved.
 */
export async function moveModuleData(
  core: Deno.Kv,
  name: string,
  path: string,
): Promise<number> {
  const prefixes = [keys.moduleData(name), keys.moduleUsage(name)];
  const present = await Promise.all(
    prefixes.map(async (prefix) =>
      !(await core.list({ prefix }, { limit: 1 }).next()).done
    ),
  );
  if (!present.some((p) => p)) return 0;
  const target = await Deno.openKv(path);
  let moved = 0;
  try {
    for (const prefix of prefixes) {
      let op = target.atomic();
      let n = 0;
      for await (const entry of core.list({ prefix })) {
        op = op.set(entry.key, entry.value);
        if (++n === 50) {
          await op.commit();
          op = target.atomic();
          n = 0;
        }
        moved++;
      }
      if (n > 0) await op.commit();
    }
    for (const prefix of prefixes) {
      let op = core.atomic();
      let n = 0;
      for await (const entry of core.list({ prefix })) {
        op = op.delete(entry.key);
        if (++n === 100) {
          await op.commit();
          op = core.atomic();
          n = 0;
        }
      }
      if (n > 0) await op.commit();
    }
  } finally {
    target.close();
  }
  return moved;
}
