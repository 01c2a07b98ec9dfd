/**
 * Schema versions and forward migrations of the KV data.
 *
 * The schema version lives at `["meta", "schema"]`. At start each migration
 * newer than it runs in order; the version is raised after each one succeeds,
 * in the same atomic operation as the migration's last write where possible.
 * Migrations are idempotent (safe to run again after a crash) and a failing
 * migration leaves the version, and so the data's meaning, where it was.
 *
 * @module
 */

import { keys } from "./records.ts";
import { compareVersions } from "../shared/version.ts";

/** One forward migration. */
export interface Migration {
  /** The schema version this migration produces. */
  version: number;
  /** What it does, for the log. */
  description: string;
  /** Apply it. Must be idempotent. */
  run: (kv: Deno.Kv) => Promise<void>;
}

/** The data is newer than this server understands. */
export class SchemaTooNewError extends Error {
  /** Stable error code. */
  readonly code = "schema_too_new";

  /** Create the error. */
  constructor(found: number, known: number) {
    super(
      `the data has schema version ${found}, this server knows up to ${known}: upgrade the server`,
    );
    this.name = "SchemaTooNewError";
  }
}

/** A migration failed; the data stays at `version`. */
export class MigrationError extends Error {
  /** Stable error code. */
  readonly code = "migration_failed";

  /** Create the error. */
  constructor(version: number, cause: unknown) {
    super(`migration to schema ${version} failed: ${String(cause)}`);
    this.name = "MigrationError";
  }
}

/** The data was last written by a newer server than this one. */
export class DataTooNewError extends Error {
  /** Stable error code. */
  readonly code = "data_too_new";

  /** Create the error. */
  constructor(found: string, running: string) {
    super(
      `the data was last written by server ${found}, newer than this one (${running}): upgrade the server (or restore a backup taken before the upgrade)`,
    );
    this.name = "DataTooNewError";
  }
}

const SCHEMA_KEY = ["meta", "schema"];
const SERVER_VERSION_KEY = ["meta", "server_version"];

/** The built-in migrations of this server, oldest first. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    description: "initial layout: record the creation time",
    run: async (kv) => {
      await kv.atomic()
        .check({ key: ["meta", "created"], versionstamp: null })
        .set(["meta", "created"], new Date())
        .commit();
    },
  },
  {
    version: 2,
    description:
      "module storage usage: numbered shard counters become add/sub KvU64 counters",
    run: async (kv) => {
      const totals = new Map<string, bigint>();
      const old: Deno.KvKey[] = [];
      for await (const entry of kv.list<number>({ prefix: ["mod_usage"] })) {
        if (typeof entry.key[2] !== "number") continue;
        const name = String(entry.key[1]);
        totals.set(
          name,
          (totals.get(name) ?? 0n) +
            BigInt(Math.max(0, Math.round(entry.value))),
        );
        old.push(entry.key);
      }
      for (const [name, total] of totals) {
        // Idempotent: the shard keys go in the same operation that adds their total.
        let op = kv.atomic().sum(["mod_usage", name, "add"], total);
        for (const key of old.filter((k) => k[1] === name)) op = op.delete(key);
        await op.commit();
      }
    },
  },
  {
    version: 3,
    description:
      "outbound queue: an index of due times; the by-domain index, never read, goes",
    run: async (kv) => {
      for await (
        const entry of kv.list<{ id: string; next_attempt: number }>({
          prefix: keys.outbounds(),
        })
      ) {
        await kv.set(
          keys.outboundDue(entry.value.next_attempt, entry.value.id),
          true,
        );
      }
      let op = kv.atomic();
      let n = 0;
      for await (const entry of kv.list({ prefix: ["outbound_by_domain"] })) {
        op = op.delete(entry.key);
        if (++n % 100 === 0) {
          await op.commit();
          op = kv.atomic();
        }
      }
      await op.commit();
    },
  },
  {
    version: 4,
    description:
      "module storage and the messages module write compact records (a head as [size, value], a small split value's first piece in its head; a copy and its summary under short names); both layouts are read, nothing is rewritten: the version stops older servers, which cannot read the new records",
    run: () => Promise.resolve(),
  },
];

/** Read the schema version (0 for an empty database). */
export async function schemaVersion(kv: Deno.Kv): Promise<number> {
  const entry = await kv.get<number>(SCHEMA_KEY);
  return entry.value ?? 0;
}

/** The server version that last wrote the data (none before 0.1.0 recorded it). */
export async function serverVersionOf(
  kv: Deno.Kv,
): Promise<string | undefined> {
  return (await kv.get<string>(SERVER_VERSION_KEY)).value ?? undefined;
}

/**
 * Refuse data a newer server wrote.
 *
 * @throws {DataTooNewError} when the recorded version is newer than `version`
 */
export async function checkServerVersion(
  kv: Deno.Kv,
  version: string,
): Promise<void> {
  const found = await serverVersionOf(kv);
  if (found && compareVersions(found, version) > 0) {
    throw new DataTooNewError(found, version);
  }
}

/** Record `version` as the server that last wrote the data. */
export async function recordServerVersion(
  kv: Deno.Kv,
  version: string,
): Promise<void> {
  if (await serverVersionOf(kv) !== version) {
    await kv.set(SERVER_VERSION_KEY, version);
  }
}

/** The migrations that would run on `kv`, oldest first (none when current). */
export async function pendingMigrations(
  kv: Deno.Kv,
  migrations: readonly Migration[] = MIGRATIONS,
): Promise<Migration[]> {
  const current = await schemaVersion(kv);
  const known = migrations.at(-1)?.version ?? 0;
  if (current > known) throw new SchemaTooNewError(current, known);
  return migrations.filter((m) => m.version > current);
}

/** Where migrations report (the server's logger fits). */
export interface MigrationLog {
  /** One line: an event and its fields. */
  info(event: string, fields: Record<string, string | number>): void;
}

/**
 * Bring the data to the newest schema.
 *
 * @returns the schema version afterwards
 * @throws {SchemaTooNewError} when the data is newer than `migrations`
 * @throws {MigrationError} when one fails (earlier ones stay applied)
 */
export async function migrate(
  kv: Deno.Kv,
  options: { migrations?: readonly Migration[]; log?: MigrationLog } = {},
): Promise<number> {
  const migrations = options.migrations ?? MIGRATIONS;
  const known = migrations.at(-1)?.version ?? 0;
  let current = await schemaVersion(kv);
  if (current > known) throw new SchemaTooNewError(current, known);
  for (const migration of migrations) {
    if (migration.version <= current) continue;
    options.log?.info("migration_start", {
      version: migration.version,
      description: migration.description,
    });
    try {
      await migration.run(kv);
    } catch (error) {
      throw new MigrationError(migration.version, error);
    }
    await kv.set(SCHEMA_KEY, migration.version);
    current = migration.version;
  }
  return current;
}
