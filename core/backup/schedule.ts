/**
 * Backups taken by the server itself (`AMTP_BACKUP_DIR`, `AMTP_BACKUP_EVERY`,
 * `AMTP_BACKUP_KEEP`): every interval a backup is written to
 * `<dir>/<time>.partial` and renamed to `<dir>/<time>` when whole, and the
 * oldest beyond `keep` are removed (only folders this schedule named).
 *
 * The copy runs in a Worker of the server's process (worker.ts): each
 * database's copy is one SQLite step that holds that thread, not the
 * server's event loop.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import type { BackupManifest, DataLocation } from "./mod.ts";
import type { BackupAnswer, BackupRequest } from "./worker.ts";

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
      const manifest = await backupInWorker({
        from: { ...options.from, exclude: [options.dir] },
        target: partial,
      });
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

/** Take one backup in a Worker of its own. */
async function backupInWorker(request: BackupRequest): Promise<BackupManifest> {
  const worker = new Worker(new URL("./worker.ts", import.meta.url), {
    type: "module",
    name: "backup",
  });
  try {
    const answer = await new Promise<BackupAnswer>((resolve, reject) => {
      worker.onmessage = (event: MessageEvent<BackupAnswer>) =>
        resolve(event.data);
      worker.onerror = (event) => {
        event.preventDefault();
        reject(new Error(event.message));
      };
      worker.postMessage(request);
    });
    if ("error" in answer) throw new Error(answer.error);
    return answer.manifest;
  } finally {
    worker.terminate();
  }
}

/** Remove the oldest backups beyond `keep`. */
async function prune(dir: string, keep: number, log: Logger): Promise<void> {
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (entry.isDirectory && NAME.test(entry.name)) names.push(entry.name);
  }
  names.sort();
  for (const name of names.slice(0, Math.max(0, names.length - keep))) {
    // Out of sight at once: nobody copies or verifies a half-removed backup.
    await Deno.rename(`${dir}/${name}`, `${dir}/${name}.removing`);
    await Deno.remove(`${dir}/${name}.removing`, { recursive: true });
    log.info("backup_removed", { dir: `${dir}/${name}` });
  }
}
