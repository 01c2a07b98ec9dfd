/**
 * Backups taken by the server itself (`AMTP_BACKUP_DIR`, `AMTP_BACKUP_EVERY`,
 * `AMTP_BACKUP_KEEP`): every interval a backup is written to
 * `<dir>/<time>.partial` and renamed to `<dir>/<time>` when whole, and the
 * oldest beyond `keep` are removed (only folders this schedule named).
 *
 * The copy runs in the server's process: each database's copy is one
 * SQLite step, during which the server's event loop waits (milliseconds for
 * small databases, about a second per few hundred MB).
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import { type DataLocation, takeBackup } from "./mod.ts";

/** A backup folder's name: its UTC time, sortable (`20261128T043000Z`). */
const NAME = /^\d{8}T\d{6}Z$/;

/** Options of {@link scheduleBackups}. */
export interface BackupSchedule {
  /** What to back up. */
  from: DataLocation;
  /** Folder of the backups. */
  dir: string;
  /** Milliseconds between backups. */
  everyMs: number;
  /** Backups kept. */
  keep: number;
  /** Logger. */
  log: Logger;
  /** Told of each result (metrics). */
  observe?: (ok: boolean, at: Date) => void;
  /** Clock. */
  now?: () => Date;
}

/** Take backups every `everyMs` until the returned function is called. */
export function scheduleBackups(options: BackupSchedule): () => Promise<void> {
  const now = options.now ?? (() => new Date());
  let running: Promise<void> | undefined;
  const once = async () => {
    const at = now();
    const name = at.toISOString().replace(/[-:]|\.\d+/g, "");
    const partial = `${options.dir}/${name}.partial`;
    try {
      await Deno.mkdir(options.dir, { recursive: true, mode: 0o700 });
      const manifest = await takeBackup(
        { ...options.from, exclude: [options.dir] },
        partial,
        now,
      );
      await Deno.rename(partial, `${options.dir}/${name}`);
      options.log.info("backup_taken", {
        dir: `${options.dir}/${name}`,
        files: manifest.files.length,
      });
      options.observe?.(true, at);
      await prune(options.dir, options.keep, options.log);
    } catch (error) {
      await Deno.remove(partial, { recursive: true }).catch(() => {});
      options.log.error("backup_failed", { error: String(error) });
      options.observe?.(false, at);
    }
  };
  const timer = setInterval(() => {
    running ??= once().finally(() => running = undefined);
  }, options.everyMs);
  return async () => {
    clearInterval(timer);
    await running;
  };
}

/** Remove the oldest backups beyond `keep`. */
async function prune(dir: string, keep: number, log: Logger): Promise<void> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isDirectory && NAME.test(entry.name)) names.push(entry.name);
  }
  names.sort();
  for (const name of names.slice(0, Math.max(0, names.length - keep))) {
    await Deno.remove(`${dir}/${name}`, { recursive: true });
    log.info("backup_removed", { dir: `${dir}/${name}` });
  }
}
