/**
 * Offline administration on the data folder, for an operator who is locked
 * out (lost key, blocked account): `deno task admin ...`. It opens the KV
 * directly (the server may keep running: KV handles two processes).
 *
 * ```
 * deno task admin add-admin NAME --key FILE.pub   add an admin with a public key
 * deno task admin add-key NAME --key FILE.pub     give an existing admin another key
 * deno task admin enable NAME                     re-enable a disabled admin
 * deno task admin list-admins
 * deno task admin unblock --all | account ID | ip ADDRESS | account_ip ID|SOURCE
 * deno task admin backup DIR                      online backup of every database (the server may run)
 * deno task admin verify-backup DIR               check a backup's manifest and checksums
 * deno task admin restore DIR                     restore into an empty data folder (server stopped)
 * deno task admin migrate [--dry-run]             bring the data to this server's schema (or say what would change)
 * deno task admin rotate-dkim DOMAIN              new DKIM keys for email, pending
 * deno task admin activate-dkim DOMAIN            sign with them from now on
 * ```
 *
 * `unblock account ID` also lifts that account's per-source blocks, `unblock
 * ip ADDRESS` that source's per-account blocks (ids as `admin_get_blocks`
 * lists them: `admin:NAME`, `user:ADDRESS`, an IPv4 address or an IPv6 /64).
 *
 * @module
 */

import { readPublicKey } from "../../shared/login/keyfile.ts";
import { openStore } from "../../kv/mod.ts";
import {
  addKey,
  FAILURE_SCOPES,
  makeKeyRecord,
  sourceOf,
} from "../auth/mod.ts";
import { type Config, ConfigError, loadConfig } from "../config/mod.ts";
import {
  BackupError,
  restoreBackup,
  takeBackup,
  verifyBackup,
} from "../backup/mod.ts";
import {
  checkServerVersion,
  migrate,
  MIGRATIONS,
  pendingMigrations,
  recordServerVersion,
  schemaVersion,
  serverVersionOf,
} from "../../kv/migrations.ts";
import { APP_VERSION } from "../../shared/version.ts";
import { loadEnvFile } from "../../shared/env_file.ts";
import { normalizeAdminName } from "../../shared/identity.ts";
import { ServerKeys } from "../federation/keys.ts";
import { DkimKeys } from "../federation/dkim.ts";

const USAGE = `usage:
  deno task admin add-admin NAME --key FILE.pub
  deno task admin add-key NAME --key FILE.pub
  deno task admin enable NAME
  deno task admin list-admins
  deno task admin unblock --all | account ID | ip ADDRESS | account_ip 'ID|SOURCE'
  deno task admin rotate-server-key      (then, after DNS is updated) activate-server-key
  deno task admin backup DIR             (online: the server may run)
  deno task admin verify-backup DIR
  deno task admin restore DIR            (into an empty AMTP_DATA)
  deno task admin migrate [--dry-run]
  deno task admin rotate-dkim DOMAIN     (then, after DNS is updated) activate-dkim DOMAIN
  deno task admin export USER --format mbox|maildir|eml DIR
  deno task admin import USER FILE|DIR   (mbox, Maildir, .eml: server/admin.ts)`;

function flag(args: string[], name: string): string | undefined {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
}

/** Run an offline admin command; returns the exit code. */
export async function main(args: string[]): Promise<number> {
  await loadEnvFile(".env");
  let config;
  try {
    config = loadConfig(Deno.env.toObject());
  } catch (error) {
    if (error instanceof ConfigError) {
      console.error(`configuration error: ${error.message}`);
      return 2;
    }
    throw error;
  }
  const [verb, target] = args;
  // These must not open (and so migrate) the store first.
  const data = await dataCommand(verb, target, args, config);
  if (data !== undefined) return data;
  const store = await openStore(config.kvPath);
  try {
    switch (verb) {
      case "add-admin":
      case "add-key": {
        const keyFile = flag(args, "key");
        if (!target || !keyFile) break;
        const name = normalizeAdminName(target);
        const pub = await readPublicKey(keyFile);
        const key = await makeKeyRecord(pub.algorithm, pub.spki, "offline");
        const existing = await store.accounts.getAdmin(name);
        if (verb === "add-admin") {
          if (existing) {
            console.error(`admin ${name} exists: use add-key`);
            return 1;
          }
          const now = new Date();
          await store.accounts.addAdmin({
            name,
            keys: [key],
            disabled: false,
            created: now,
            updated: now,
          });
          console.log(`admin ${name} added (key ${key.id})`);
        } else {
          if (!existing) {
            console.error(`no admin ${name}`);
            return 1;
          }
          existing.keys = addKey(existing.keys, key);
          existing.updated = new Date();
          await store.accounts.putAdmin(existing);
          console.log(`key ${key.id} added to admin ${name}`);
        }
        await store.failures.unblock("account", `admin:${name}`);
        return 0;
      }
      case "enable": {
        if (!target) break;
        const admin = await store.accounts.getAdmin(normalizeAdminName(target));
        if (!admin) {
          console.error(`no admin ${target}`);
          return 1;
        }
        admin.disabled = false;
        await store.accounts.putAdmin(admin);
        console.log(`admin ${admin.name} enabled`);
        return 0;
      }
      case "rotate-server-key": {
        const keys = await ServerKeys.open(
          config.dataDir,
          config.serverKeyAlgorithm,
        );
        const record = await keys.rotate();
        console.log(
          `new key pending. Publish this TXT record at ${config.hostname} next to the current one:`,
        );
        console.log(`  amtp-dkim=${record}`);
        console.log(
          "then, once DNS caches have it (an hour or so): deno task admin activate-server-key",
        );
        return 0;
      }
      case "activate-server-key": {
        const keys = await ServerKeys.open(
          config.dataDir,
          config.serverKeyAlgorithm,
        );
        await keys.activate();
        console.log(
          "the new key signs from now on (restart the server to use it); keep the old record published a day longer",
        );
        return 0;
      }
      case "rotate-dkim": {
        if (!target) break;
        const domain = target.toLowerCase();
        const records = await new DkimKeys(store.kv).rotate(domain);
        console.log(
          `new DKIM keys pending for ${domain}. Publish these TXT records next to the current ones:`,
        );
        for (const r of records) {
          console.log(`  ${r.name}. IN TXT "${r.value}"`);
        }
        console.log(
          `then, once DNS caches have them: deno task admin activate-dkim ${domain}`,
        );
        return 0;
      }
      case "activate-dkim": {
        if (!target) break;
        try {
          await new DkimKeys(store.kv).activate(target);
        } catch (error) {
          console.error((error as Error).message);
          return 1;
        }
        console.log(
          `the new keys sign mail from ${target} within a minute; keep the old records published a week longer (mail in transit)`,
        );
        return 0;
      }
      case "list-admins": {
        const page = await store.accounts.listAdmins({ limit: 1000 });
        for (const admin of page.items) {
          console.log(
            `${admin.name}${admin.disabled ? " (disabled)" : ""} keys: ${
              admin.keys.map((k) => `${k.id} ${k.algorithm} ${k.label}`).join(
                ", ",
              )
            }`,
          );
        }
        return 0;
      }
      case "unblock": {
        if (target === "--all") {
          const all = await store.failures.list();
          for (const record of all) {
            await store.failures.delete(record.scope, record.id);
          }
          console.log(`${all.length} block records removed`);
          return 0;
        }
        const id = args[2];
        const scope = FAILURE_SCOPES.find((s) => s === target);
        if (!scope || !id) break;
        const lifted = await store.failures.unblock(
          scope,
          scope === "ip" ? sourceOf(id) : id,
        );
        const had = lifted > 0;
        console.log(
          had
            ? `unblocked ${target} ${id} (${lifted} record${
              lifted === 1 ? "" : "s"
            })`
            : `no block for ${id}`,
        );
        return had ? 0 : 1;
      }
    }
    console.error(USAGE);
    return 2;
  } catch (error) {
    console.error(`error: ${error instanceof Error ? error.message : error}`);
    return 1;
  } finally {
    store.close();
  }
}

/** Backup, restore and migrate; undefined for other verbs. */
async function dataCommand(
  verb: string | undefined,
  target: string | undefined,
  args: string[],
  config: Config,
): Promise<number | undefined> {
  const where = {
    dataDir: config.dataDir,
    kvPath: config.kvPath,
    exclude: config.backup ? [config.backup.dir] : [],
  };
  try {
    switch (verb) {
      case "backup": {
        if (!target) return undefined;
        const manifest = await takeBackup(where, target);
        console.log(
          `backup of ${config.dataDir} in ${target}: ${manifest.files.length} files, schema ${manifest.schema}, server ${manifest.version}`,
        );
        console.log(
          "it holds the server's private keys: keep it as secret as the data folder",
        );
        return 0;
      }
      case "verify-backup": {
        if (!target) return undefined;
        const manifest = await verifyBackup(target);
        console.log(
          `backup ${target} is whole: ${manifest.files.length} files, schema ${manifest.schema}, server ${manifest.version}, taken ${manifest.created}`,
        );
        return 0;
      }
      case "restore": {
        if (!target) return undefined;
        const manifest = await restoreBackup(target, where);
        console.log(
          `restored ${manifest.files.length} files of the backup taken ${manifest.created} into ${config.dataDir}`,
        );
        return 0;
      }
      case "migrate":
        return await migrateCommand(config.kvPath, args.includes("--dry-run"));
    }
  } catch (error) {
    if (error instanceof BackupError) {
      console.error(`${verb} refused (${error.code}): ${error.message}`);
      return 1;
    }
    console.error(`error: ${error instanceof Error ? error.message : error}`);
    return 1;
  }
  return undefined;
}

/** `migrate [--dry-run]`: what would change, or change it. */
async function migrateCommand(path: string, dryRun: boolean): Promise<number> {
  const kv = await Deno.openKv(path);
  try {
    await checkServerVersion(kv, APP_VERSION);
    const written = await serverVersionOf(kv) ?? "(not recorded)";
    const schema = await schemaVersion(kv);
    const pending = await pendingMigrations(kv);
    console.log(
      `data: schema ${schema}, last written by server ${written}; this server: ${APP_VERSION}, schema ${
        MIGRATIONS.at(-1)?.version ?? 0
      }`,
    );
    if (pending.length === 0) {
      console.log("nothing to migrate");
    }
    for (const migration of pending) {
      console.log(
        `${
          dryRun ? "would run" : "running"
        } migration ${migration.version}: ${migration.description}`,
      );
    }
    if (!dryRun && pending.length > 0) {
      await migrate(kv);
      await recordServerVersion(kv, APP_VERSION);
      console.log(`data now at schema ${await schemaVersion(kv)}`);
    }
    return 0;
  } finally {
    kv.close();
  }
}

if (import.meta.main) {
  Deno.exit(await main(Deno.args));
}
