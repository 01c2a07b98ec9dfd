/**
 * Storage: opens Deno KV (a local file, or a KV Connect URL for a store
 * shared by several server processes), brings the schema up to date and hands
 * out the typed stores.
 *
 * @module
 */

import { retryLockedCommits } from "../shared/kv_locked.ts";
import { AccountStore } from "./accounts.ts";
import { FailureStore } from "./failures.ts";
import {
  checkServerVersion,
  migrate,
  type Migration,
  type MigrationLog,
  recordServerVersion,
} from "./migrations.ts";
import { APP_VERSION } from "../shared/version.ts";
import { KvGroupCommit } from "./group_commit.ts";
import { TokenStore } from "./tokens.ts";
import { InvitationStore } from "./invitations.ts";
import { PushStore } from "./push.ts";

export * from "./records.ts";
export * from "./accounts.ts";
export * from "./tokens.ts";
export * from "./failures.ts";
export * from "./secrets.ts";
export * from "./migrations.ts";
export * from "./group_commit.ts";
export * from "./modules.ts";
export * from "./module_keys.ts";
export * from "./outbound.ts";
export * from "./caches.ts";
export * from "./dkim.ts";
export * from "./invitations.ts";
export * from "./push.ts";

/** The open storage. */
export interface Store {
  /** The raw KV (module host state, modules' data in `core` storage, the queue). */
  kv: Deno.Kv;
  /** Concurrent independent writes to `kv`, committed together. */
  writes: KvGroupCommit;
  /** Domains, users, aliases, catch-alls, admins. */
  accounts: AccountStore;
  /** Session tokens. */
  tokens: TokenStore;
  /** Login guard records (failed logins, known sources). */
  failures: FailureStore;
  /** Invitations (one-time codes for an address). */
  invitations: InvitationStore;
  /** Web Push subscriptions and the VAPID key. */
  push: PushStore;
  /** Schema version after migrations. */
  schema: number;
  /** Close the KV. */
  close(): void;
}

/**
 * Open KV at `path` (file path or URL), refuse it when a newer server wrote
 * it, migrate it and record this server (`serverVersion`) as its writer.
 */
export async function openStore(
  path: string,
  options: {
    log?: MigrationLog;
    migrations?: readonly Migration[];
    serverVersion?: string;
  } = {},
): Promise<Store> {
  if (!/^https?:\/\//.test(path)) {
    const dir = path.replace(/[^/]*$/, "");
    if (dir) await Deno.mkdir(dir, { recursive: true });
  }
  const kv = await Deno.openKv(path);
  retryLockedCommits(kv);
  const writes = new KvGroupCommit(kv);
  try {
    const version = options.serverVersion ?? APP_VERSION;
    // Refused before anything is written: an older server touches nothing.
    await checkServerVersion(kv, version);
    const schema = await migrate(kv, options);
    await recordServerVersion(kv, version);
    return {
      kv,
      accounts: new AccountStore(kv),
      writes,
      tokens: new TokenStore(kv, writes),
      failures: new FailureStore(kv, writes),
      invitations: new InvitationStore(kv),
      push: new PushStore(kv),
      schema,
      close: () => kv.close(),
    };
  } catch (error) {
    kv.close();
    throw error;
  }
}
