/**
 * Typed records stored in Deno KV, and the key layout.
 *
 * | key | value |
 * | --- | --- |
 * | `["meta","schema"]` | schema version (number) |
 * | `["meta","created"]` | Date the data was created |
 * | `["domain", name]` | {@link DomainRecord} |
 * | `["user", domain, local]` | {@link UserRecord} |
 * | `["alias", domain, local]` | {@link AliasRecord} |
 * | `["catchall", domain]` | {@link CatchallRecord} |
 * | `["admin", name]` | {@link AdminRecord} |
 * | `["photo", domain, local]` | {@link PhotoRecord} |
 * | `["token", sha256hex]` | {@link TokenRecord} |
 * | `["token_index", kind, account, sha256hex]` | creation Date (lists an account's tokens) |
 * | `["login_failure", "account"\|"ip", id]` | {@link FailureRecord} |
 * | `["login_failure", "account_ip", account, source]` | {@link FailureRecord} |
 * | `["login_known", account]` | {@link KnownSourcesRecord} |
 * | `["meta", "secret", name]` | a server secret (32 random bytes), created once |
 * | `["login_decoy", "rsa", bits]` | SPKI of the persistent RSA decoy key of that size |
 * | `["outbound", itemId]` | `OutboundItem` (outbound.ts): a payload queued for one remote domain |
 * | `["outbound_due", epochMs, itemId]` | true: the item is due then (written with the item) |
 * | `["profile_cache", address]` | `CachedProfile` (caches.ts): a remote user's profile, 5 minutes |
 * | `["dkim", domain]` | `DkimDomainRecord` (dkim.ts): a hosted domain's DKIM keys for email |
 * | `["policy_cache", domain]` | another domain's delivery policy as fetched (core/federation/policy.ts) |
 * | `["invitation", id]` | `InvitationRecord` (invitations.ts): a one-time code's hash, for an address, with its expiry |
 * | `["invitation_of", address, id]` | creation Date (lists an address's invitations) |
 * | `["push_subscription", address, id]` | `PushSubscriptionRecord` (push.ts): a Web Push endpoint of one of the user's browsers |
 * | `["meta", "vapid"]` | the server's VAPID key pair (push.ts), created once |
 * | `["module_state", module]` | `ModuleStateRecord` (modules.ts): the admin's choices of a module's versions |
 * | `["module_author", module]` | `ModuleAuthorRecord` (packages.ts): the author key an admin trusts for a module's packages |
 * | `["module_package", module, version]` | `ModulePackageRecord` (packages.ts): an installed package's signer, hash and installer |
 * | `["module_key", module, version, keyId]` | `ModuleKeyRecord` (module_keys.ts): a public key a remote module of that version logs in with |
 * | `["mod", module, "d", ...key]` | a module's stored value (`[size, value]`), or a reference to its chunks (workers/sdk/storage.ts) |
 * | `["mod", module, "c", generation, i]` | one chunk of a module's value (a large one, or one whose record would spill out of its SQLite page) |
 * | `["mod_usage", module, "add"\|"sub"]` | `Deno.KvU64`: bytes a module wrote and freed (usage is their difference) |
 *
 * The `mod` and `mod_usage` keys are in the core's database only with
 * `AMTP_MODULE_STORAGE=core`; otherwise each module's own database has them.
 *
 * @module
 */

/** Login key algorithms. */
export type KeyAlgorithm = "Ed25519" | "HPKE-X25519" | "RSA-OAEP-256";

/** A public key registered for login (one per device). */
export interface KeyRecord {
  /** Short random id. */
  id: string;
  /** Device label chosen by the owner. */
  label: string;
  /** Algorithm. */
  algorithm: KeyAlgorithm;
  /** SubjectPublicKeyInfo DER. */
  public_key: Uint8Array;
  /** When it was added. */
  created: Date;
}

/** A hosted domain. */
export interface DomainRecord {
  /** Domain name (lowercase, punycode). */
  name: string;
  /** When it was added. */
  created: Date;
  /** Whether anyone may register an address on it. */
  registration_open: boolean;
  /** Free text for admins. */
  description: string;
}

/** A user account with a mailbox. */
export interface UserRecord {
  /** Full address. */
  address: string;
  /** Display name. */
  name: string;
  /** Login keys. */
  keys: KeyRecord[];
  /** End-to-end public keys published in the profile (opaque to the server). */
  public_keys: PublicKeyRecord[];
  /** Disabled accounts cannot log in. */
  disabled: boolean;
  /** Mailbox quota in bytes, 0 for the server default. */
  quota: number;
  /** When it was created. */
  created: Date;
  /** When it last changed. */
  updated: Date;
}

/** A public key a user publishes for end-to-end encryption. */
export interface PublicKeyRecord {
  /** Short id. */
  id: string;
  /** Device label. */
  label: string;
  /** Purpose and algorithm, e.g. `X25519` or `Ed25519`. */
  algorithm: string;
  /** Key bytes as the client gave them. */
  key: Uint8Array;
  /** When it was published. */
  created: Date;
}

/** An address without a mailbox that forwards to others. */
export interface AliasRecord {
  /** Full alias address. */
  address: string;
  /** Where it forwards. */
  recipients: string[];
  /** Free text for admins. */
  description: string;
  /** When it was created. */
  created: Date;
  /** When it last changed. */
  updated: Date;
}

/** A domain's catch-all: recipients for local addresses that do not exist. */
export interface CatchallRecord {
  /** The domain. */
  domain: string;
  /** Recipients (empty: catch-all off). */
  recipients: string[];
  /** When it last changed. */
  updated: Date;
}

/** An administrator. */
export interface AdminRecord {
  /** Login name. */
  name: string;
  /** Login keys. */
  keys: KeyRecord[];
  /** Disabled admins cannot log in. */
  disabled: boolean;
  /** When it was created. */
  created: Date;
  /** When it last changed. */
  updated: Date;
}

/** A user's profile photo. */
export interface PhotoRecord {
  /** MIME type. */
  type: string;
  /** Image bytes. */
  data: Uint8Array;
}

/** A session token, stored under the SHA-256 of the token. */
export interface TokenRecord {
  /** Admin or user token. */
  kind: "admin" | "user";
  /** Admin name or user address. */
  account: string;
  /** Issued at. */
  created: Date;
  /** Epoch milliseconds after which it is invalid (checked on every use). */
  expires: number;
  /** Seconds added on each use (sliding expiry). */
  ttl: number;
  /** Client IP at login. */
  ip: string;
  /** Device label the client gave, if any. */
  label: string;
}

/**
 * Where failed logins are counted: `account_ip` one account from one source
 * (blocks that source for that account), `ip` one source across accounts
 * (blocks the source), `account` one account from every source (slows down
 * sources that never logged into the account).
 */
export type FailureScope = "account" | "ip" | "account_ip";

/** Failed login attempts of one scope. */
export interface FailureRecord {
  /** What is counted. */
  scope: FailureScope;
  /**
   * `admin:NAME` or `user:ADDRESS` (account), a source (ip: an IPv4 address
   * or an IPv6 /64 such as `2001:db8:0:1::/64`), or both joined by `|`
   * (account_ip).
   */
  id: string;
  /** Consecutive failures. */
  failures: number;
  /** Epoch milliseconds until which logins are refused (or slowed down). */
  blocked_until: number;
  /** Last failure. */
  last: Date;
}

/** Sources an account logged in from successfully: never slowed down for it. */
export interface KnownSourcesRecord {
  /** Keyed hashes of the sources (never the addresses), most recent first. */
  sources: { hash: string; last: Date }[];
}

/** The id of an account_ip record: `account|source`. */
export function pairId(account: string, source: string): string {
  return `${account}|${source}`;
}

/** `[account, source]` of an account_ip id. */
export function splitPair(id: string): [string, string] {
  const bar = id.indexOf("|");
  return bar < 0 ? [id, ""] : [id.slice(0, bar), id.slice(bar + 1)];
}

/** Key builders, the one place that knows the layout. */
export const keys = {
  domain: (name: string) => ["domain", name] as Deno.KvKey,
  domains: () => ["domain"] as Deno.KvKey,
  user: (domain: string, local: string) =>
    ["user", domain, local] as Deno.KvKey,
  users: (domain?: string) =>
    (domain ? ["user", domain] : ["user"]) as Deno.KvKey,
  alias: (domain: string, local: string) =>
    ["alias", domain, local] as Deno.KvKey,
  aliases: (domain?: string) =>
    (domain ? ["alias", domain] : ["alias"]) as Deno.KvKey,
  catchall: (domain: string) => ["catchall", domain] as Deno.KvKey,
  catchalls: () => ["catchall"] as Deno.KvKey,
  admin: (name: string) => ["admin", name] as Deno.KvKey,
  admins: () => ["admin"] as Deno.KvKey,
  photo: (domain: string, local: string) =>
    ["photo", domain, local] as Deno.KvKey,
  token: (hash: string) => ["token", hash] as Deno.KvKey,
  tokenIndex: (kind: string, account: string, hash?: string) =>
    (hash
      ? ["token_index", kind, account, hash]
      : ["token_index", kind, account]) as Deno.KvKey,
  failure: (scope: string, id: string) =>
    (scope === "account_ip"
      ? ["login_failure", scope, ...splitPair(id)]
      : ["login_failure", scope, id]) as Deno.KvKey,
  failures: (scope?: FailureScope, account?: string) =>
    (account
      ? ["login_failure", scope!, account]
      : scope
      ? ["login_failure", scope]
      : ["login_failure"]) as Deno.KvKey,
  knownSources: (account: string) => ["login_known", account] as Deno.KvKey,
  secret: (name: string) => ["meta", "secret", name] as Deno.KvKey,
  decoyKey: (algorithm: string, bits: number) =>
    ["login_decoy", algorithm, bits] as Deno.KvKey,
  outbound: (id: string) => ["outbound", id] as Deno.KvKey,
  outbounds: () => ["outbound"] as Deno.KvKey,
  outboundDue: (due?: number, id?: string) =>
    (due === undefined
      ? ["outbound_due"]
      : id === undefined
      ? ["outbound_due", due]
      : ["outbound_due", due, id]) as Deno.KvKey,
  profileCache: (address: string) => ["profile_cache", address] as Deno.KvKey,
  policyCache: (domain: string) => ["policy_cache", domain] as Deno.KvKey,
  dkim: (domain: string) => ["dkim", domain] as Deno.KvKey,
  invitation: (id: string) => ["invitation", id] as Deno.KvKey,
  invitations: () => ["invitation"] as Deno.KvKey,
  invitationOf: (address: string, id: string) =>
    ["invitation_of", address, id] as Deno.KvKey,
  invitationsOf: (address: string) => ["invitation_of", address] as Deno.KvKey,
  pushSubscription: (address: string, id: string) =>
    ["push_subscription", address, id] as Deno.KvKey,
  pushSubscriptions: (address: string) =>
    ["push_subscription", address] as Deno.KvKey,
  vapid: () => ["meta", "vapid"] as Deno.KvKey,
  moduleState: (module: string) => ["module_state", module] as Deno.KvKey,
  moduleAuthor: (module: string) => ["module_author", module] as Deno.KvKey,
  modulePackage: (module: string, version: string) =>
    ["module_package", module, version] as Deno.KvKey,
  modulePackages: () => ["module_package"] as Deno.KvKey,
  moduleKey: (module: string, version: string, id: string) =>
    ["module_key", module, version, id] as Deno.KvKey,
  moduleKeys: (module?: string) =>
    (module === undefined
      ? ["module_key"]
      : ["module_key", module]) as Deno.KvKey,
  moduleData: (module: string) => ["mod", module] as Deno.KvKey,
  moduleUsage: (module: string) => ["mod_usage", module] as Deno.KvKey,
  /** A push for other instances sharing the database (core/cluster). */
  pushBus: (at?: number, instance?: string, n?: number) =>
    (at === undefined
      ? ["push_bus"]
      : instance === undefined
      ? ["push_bus", at]
      : ["push_bus", at, instance, n ?? 0]) as Deno.KvKey,
} as const;
