/**
 * Online backup and restore of a data folder: every database (the core's
 * and each module's KV file) copied with SQLite's online backup API in one
 * read transaction each (a consistent snapshot while the server writes: a
 * WAL reader blocks no writer), every other file (keys, certificates)
 * copied as it is, and a manifest (`manifest.json`, written last) naming
 * the versions and each file's size and SHA-256.
 *
 * Each database is consistent in itself; they are taken one after another
 * (modules first, the core last), so everything committed before the backup
 * started is in it. A backup holds the server's private keys (TLS, ACME
 * account, signing key, the first admin's key): keep it as secret as the
 * data folder (files are owner-only).
 *
 * @module
 */

import { backup as sqliteBackup, DatabaseSync } from "node:sqlite";
import { createHash } from "node:crypto";
import {
  MIGRATIONS,
  schemaVersion,
  serverVersionOf,
} from "../../kv/migrations.ts";
import {
  APP_NAME,
  APP_VERSION,
  compareVersions,
} from "../../shared/version.ts";

/** Name of the manifest inside a backup folder. */
export const MANIFEST = "manifest.json";
/** Format of the manifest written here. */
export const BACKUP_FORMAT = 1;

/** One file of a backup. */
export interface BackupFile {
  /** Path inside the backup (and the data folder), `/`-separated. */
  path: string;
  /** `kv`: a database snapshot; `file`: copied as it is. */
  kind: "kv" | "file";
  /** Bytes. */
  size: number;
  /** SHA-256, hex. */
  sha256: string;
}

/** What `manifest.json` says. */
export interface BackupManifest {
  /** Manifest format. */
  format: number;
  /** Server that took it. */
  app: string;
  /** Its version. */
  version: string;
  /** Schema version of the core database in the backup. */
  schema: number;
  /** Server version that last wrote the data (recorded in the core database). */
  dataVersion?: string;
  /** When it was taken (ISO 8601). */
  created: string;
  /** Path of the core database inside the backup. */
  core: string;
  /** Every file. */
  files: BackupFile[];
}

/** A backup cannot be taken or restored; `code` says why. */
export class BackupError extends Error {
  /** Stable error code. */
  readonly code:
    | "target_not_empty"
    | "remote_database"
    | "no_manifest"
    | "bad_manifest"
    | "corrupt"
    | "too_new";

  /** Create the error. */
  constructor(code: BackupError["code"], message: string) {
    super(message);
    this.name = "BackupError";
    this.code = code;
  }
}

/** Where a server's data lives. */
export interface DataLocation {
  /** The data folder. */
  dataDir: string;
  /** The core's database (inside the data folder or not; a URL is refused). */
  kvPath: string;
  /** Paths inside the data folder left out (a backup folder kept there). */
  exclude?: string[];
}

/**
 * Never copied: SQLite's files beside an open database, half-written files,
 * and the running server's address (`listening.json`).
 */
const LEFT_OUT = /(-wal|-shm|-journal|\.tmp)$|^listening\.json$/;

/**
 * Take a backup of `from` into `target` (created; must be empty if it
 * exists). Returns the manifest written.
 */
export async function takeBackup(
  from: DataLocation,
  target: string,
  now: () => Date = () => new Date(),
): Promise<BackupManifest> {
  if (/^https?:\/\//.test(from.kvPath)) {
    throw new BackupError(
      "remote_database",
      "the core database is a KV Connect server: back it up where it runs (denokv's SQLite file)",
    );
  }
  await ensureEmpty(target, "backup into");
  await Deno.mkdir(target, { recursive: true, mode: 0o700 });
  const dataDir = await Deno.realPath(from.dataDir);
  const corePath = await Deno.realPath(from.kvPath);
  const excluded = await Promise.all(
    (from.exclude ?? []).map((p) => Deno.realPath(p).catch(() => p)),
  );
  excluded.push(await Deno.realPath(target));
  const inside = corePath.startsWith(`${dataDir}/`);
  const core = inside ? corePath.slice(dataDir.length + 1) : "core.kv";
  // Everything else first, the core's database last.
  const files: BackupFile[] = [];
  for (const path of await walk(dataDir, excluded)) {
    if (path === core && inside) continue;
    const kind = path.endsWith(".kv") ? "kv" : "file";
    await Deno.mkdir(parentOf(`${target}/${path}`), {
      recursive: true,
      mode: 0o700,
    });
    if (kind === "kv") {
      await snapshot(`${dataDir}/${path}`, `${target}/${path}`);
    } else {
      await Deno.copyFile(`${dataDir}/${path}`, `${target}/${path}`);
      await Deno.chmod(`${target}/${path}`, 0o600);
    }
    files.push(await describe(target, path, kind));
  }
  await Deno.mkdir(parentOf(`${target}/${core}`), {
    recursive: true,
    mode: 0o700,
  });
  await snapshot(corePath, `${target}/${core}`);
  const versions = await readVersions(`${target}/${core}`);
  files.push(await describe(target, core, "kv"));
  const manifest: BackupManifest = {
    format: BACKUP_FORMAT,
    app: APP_NAME,
    version: APP_VERSION,
    schema: versions.schema,
    dataVersion: versions.dataVersion,
    created: now().toISOString(),
    core,
    files,
  };
  await Deno.writeTextFile(
    `${target}/${MANIFEST}`,
    JSON.stringify(manifest, null, 2) + "\n",
    { mode: 0o600 },
  );
  return manifest;
}

/**
 * Check a backup: its manifest, every file's size and SHA-256, and that
 * this server can read its data. Returns the manifest.
 */
export async function verifyBackup(dir: string): Promise<BackupManifest> {
  let text: string;
  try {
    text = await Deno.readTextFile(`${dir}/${MANIFEST}`);
  } catch {
    throw new BackupError(
      "no_manifest",
      `${dir} holds no ${MANIFEST}: not a backup, or one that did not finish`,
    );
  }
  let manifest: BackupManifest;
  try {
    manifest = JSON.parse(text);
    if (
      typeof manifest.format !== "number" || !Array.isArray(manifest.files) ||
      typeof manifest.core !== "string" || typeof manifest.schema !== "number"
    ) throw new Error("fields missing");
  } catch (error) {
    throw new BackupError(
      "bad_manifest",
      `${dir}/${MANIFEST} is not a backup manifest (${String(error)})`,
    );
  }
  if (manifest.format > BACKUP_FORMAT) {
    throw new BackupError(
      "too_new",
      `the backup's format ${manifest.format} is newer than this server reads (${BACKUP_FORMAT}): restore it with server ${manifest.version} or newer`,
    );
  }
  const known = MIGRATIONS.at(-1)?.version ?? 0;
  if (manifest.schema > known) {
    throw new BackupError(
      "too_new",
      `the backup's data has schema ${manifest.schema}, this server (${APP_VERSION}) knows up to ${known}: restore it with server ${manifest.version} or newer`,
    );
  }
  const newest = manifest.dataVersion ?? manifest.version;
  if (compareVersions(newest, APP_VERSION) > 0) {
    throw new BackupError(
      "too_new",
      `the backup's data was written by server ${newest}, newer than this one (${APP_VERSION}): restore it with server ${newest} or newer`,
    );
  }
  const outside = manifest.files.find((file) => !safePath(file.path));
  if (outside) {
    throw new BackupError(
      "bad_manifest",
      `the manifest names a path outside the backup: ${outside.path}`,
    );
  }
  for (const file of manifest.files) {
    let found: BackupFile;
    try {
      // A plain file: a symbolic link could bring in any file of this machine.
      if (!(await Deno.lstat(`${dir}/${file.path}`)).isFile) {
        throw new BackupError(
          "corrupt",
          `${file.path} in ${dir} is not a plain file`,
        );
      }
      found = await describe(dir, file.path, file.kind);
    } catch (error) {
      if (error instanceof BackupError) throw error;
      throw new BackupError("corrupt", `${file.path} is missing from ${dir}`);
    }
    if (found.size !== file.size || found.sha256 !== file.sha256) {
      throw new BackupError(
        "corrupt",
        `${file.path} does not match the manifest (size ${found.size}, expected ${file.size}; checksum ${
          found.sha256 === file.sha256 ? "matches" : "differs"
        }): the backup is damaged`,
      );
    }
  }
  if (!manifest.files.some((f) => f.path === manifest.core)) {
    throw new BackupError(
      "bad_manifest",
      `the manifest does not list the core database ${manifest.core}`,
    );
  }
  return manifest;
}

/**
 * Restore the backup in `dir` into `to` (the data folder must be empty or
 * absent, and so must the core database's file). Verifies it first.
 */
export async function restoreBackup(
  dir: string,
  to: DataLocation,
): Promise<BackupManifest> {
  if (/^https?:\/\//.test(to.kvPath)) {
    throw new BackupError(
      "remote_database",
      "the core database is a KV Connect server: restore its SQLite file where it runs",
    );
  }
  const manifest = await verifyBackup(dir);
  await ensureEmpty(to.dataDir, "restore into");
  try {
    await Deno.lstat(to.kvPath);
    throw new BackupError(
      "target_not_empty",
      `${to.kvPath} exists: restore only where there is no database`,
    );
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
  await Deno.mkdir(to.dataDir, { recursive: true, mode: 0o700 });
  for (const file of manifest.files) {
    const destination = file.path === manifest.core
      ? to.kvPath
      : `${to.dataDir}/${file.path}`;
    await Deno.mkdir(parentOf(destination), { recursive: true, mode: 0o700 });
    await Deno.copyFile(`${dir}/${file.path}`, destination);
    await Deno.chmod(destination, 0o600);
  }
  return manifest;
}

/** Fail unless `dir` is absent or empty. */
async function ensureEmpty(dir: string, what: string): Promise<void> {
  try {
    for await (const _ of Deno.readDir(dir)) {
      throw new BackupError(
        "target_not_empty",
        `${dir} is not empty: ${what} an empty or new folder`,
      );
    }
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
  }
}

/** Files under `root` (relative, sorted), without SQLite's side files. */
async function walk(root: string, excluded: string[]): Promise<string[]> {
  const found: string[] = [];
  const visit = async (dir: string, prefix: string) => {
    for await (const entry of Deno.readDir(dir)) {
      const full = `${dir}/${entry.name}`;
      if (excluded.includes(full)) continue;
      const path = prefix ? `${prefix}/${entry.name}` : entry.name;
      if (entry.isDirectory) await visit(full, path);
      else if (entry.isFile && !LEFT_OUT.test(entry.name)) found.push(path);
    }
  };
  await visit(root, "");
  return found.sort();
}

/** Copy a live SQLite database in one step (one read transaction). */
async function snapshot(source: string, target: string): Promise<void> {
  const db = new DatabaseSync(source, { readOnly: true });
  try {
    // rate -1: every page in one step, so concurrent writes cannot restart it.
    await sqliteBackup(db, target, { rate: -1 });
  } finally {
    db.close();
  }
  await Deno.chmod(target, 0o600);
}

/** The schema and writer version recorded in a core database copy. */
async function readVersions(
  path: string,
): Promise<{ schema: number; dataVersion?: string }> {
  const kv = await Deno.openKv(path);
  try {
    return {
      schema: await schemaVersion(kv),
      dataVersion: await serverVersionOf(kv),
    };
  } finally {
    kv.close();
    // Opening made a WAL beside the copy; closing folded it back in.
    for (const side of ["-wal", "-shm"]) {
      await Deno.remove(`${path}${side}`).catch(() => {});
    }
  }
}

/** Size and SHA-256 of `dir/path`, read in chunks. */
async function describe(
  dir: string,
  path: string,
  kind: BackupFile["kind"],
): Promise<BackupFile> {
  const hash = createHash("sha256");
  let size = 0;
  // The stream closes the file at its end.
  const file = await Deno.open(`${dir}/${path}`);
  for await (const chunk of file.readable) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { path, kind, size, sha256: hash.digest("hex") };
}

/** A relative path that stays inside its folder. */
function safePath(path: string): boolean {
  return typeof path === "string" && path.length > 0 &&
    !path.startsWith("/") && !path.split("/").some((p) => p === ".." || !p);
}

function parentOf(path: string): string {
  return path.replace(/\/[^/]*$/, "") || "/";
}
