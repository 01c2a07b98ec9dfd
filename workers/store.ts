/**
 * Where each module's storage lives: its own Deno KV database
 * (`<stores>/<name>.kv`), opened by the module itself with read and write
 * permission for that one file and nothing else. Module storage thus costs no
 * trip through the core, and one module cannot reach another's data.
 *
 * Servers before this layout kept module data in the core's database under
 * `["mod", name]` and `["mod_usage", name]`; {@link importLegacyStore} moves
 * it once, before the module first starts.
 *
 * @module
 */

/** The database path of module `name` under the folder `stores`. */
export function storePath(stores: string, name: string): string {
  return `${stores}/${name}.kv`;
}

/**
 * Move a module's data from the core database into its own database:
 * everything is copied first, then deleted from the core's. Safe to run again
 * after a crash (the copy repeats with the same values) and a no-op when there
 * is nothing left to move. Returns the number of entries moved.
 */
export async function importLegacyStore(
  core: Deno.Kv,
  options: { name: string; path: string },
): Promise<number> {
  const prefixes: Deno.KvKey[] = [
    ["mod", options.name],
    ["mod_usage", options.name],
  ];
  const first = await core.list({ prefix: prefixes[0] }, { limit: 1 }).next();
  const usage = await core.list({ prefix: prefixes[1] }, { limit: 1 }).next();
  if (first.done && usage.done) return 0;
  const target = await Deno.openKv(options.path);
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
