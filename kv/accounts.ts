/**
 * Accounts storage: domains, users, aliases, catch-alls, admins and photos.
 * Methods that can conflict return a result word instead of throwing, so the
 * caller (a handler) decides which protocol error it becomes.
 *
 * @module
 */

import { splitAddress } from "../shared/identity.ts";
import {
  type AdminRecord,
  type AliasRecord,
  type CatchallRecord,
  type DomainRecord,
  type KeyRecord,
  keys,
  type PhotoRecord,
  type UserRecord,
} from "./records.ts";

/** Mutations per atomic operation when deleting in bulk. */
const BATCH = 200;

/** A page of a listing. */
export interface Page<T> {
  /** Items of this page. */
  items: T[];
  /** Pass as `cursor` for the next page; absent on the last page. */
  cursor?: string;
}

/** Options for listing. */
export interface ListOptions<T> {
  /** Maximum items. */
  limit: number;
  /** Cursor from the previous page ({@link InvalidCursorError} when unreadable). */
  cursor?: string;
  /** Keep only items for which this is true. */
  filter?: (item: T) => boolean;
}

/** A list cursor the database cannot read (a client's guess or garbage). */
export class InvalidCursorError extends Error {
  /** Stable error code. */
  readonly code = "invalid_cursor";

  /** Create the error. */
  constructor() {
    super("the cursor is not one this list gave");
    this.name = "InvalidCursorError";
  }
}

/** How long a record read stays cached in this process, in milliseconds. */
const CACHE_MS = 2000;
/** Records cached at most. */
const CACHE_MAX = 20_000;

/**
 * Typed access to account records. Single records read (domains, users,
 * aliases, catch-alls) are cached for {@link CACHE_MS}: every write through
 * this store empties the cache, so this process always sees its own writes;
 * another process sharing the database is seen up to 2 s late (as with
 * tokens).
 */
export class AccountStore {
  readonly #kv: Deno.Kv;
  readonly #cache = new Map<
    string,
    { value: unknown; at: number; gen: number }
  >();
  /** Raised before and after every write: a read that overlapped one is not cached. */
  #gen = 0;

  /** Wrap an open KV. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  async #write<T>(work: () => Promise<T>): Promise<T> {
    this.#gen++;
    this.#cache.clear();
    try {
      return await work();
    } finally {
      this.#gen++;
      this.#cache.clear();
    }
  }

  /** A record, cached; `shared` gives the cached value itself (read-only callers), not a copy. */
  async #get<T>(key: Deno.KvKey, shared = false): Promise<T | null> {
    const id = JSON.stringify(key);
    const now = Date.now();
    const hit = this.#cache.get(id);
    if (hit && hit.gen === this.#gen && now - hit.at < CACHE_MS) {
      return (shared ? hit.value : structuredClone(hit.value)) as T | null;
    }
    const gen = this.#gen;
    const value = (await this.#kv.get<T>(key)).value;
    if (gen === this.#gen) {
      if (this.#cache.size >= CACHE_MAX) this.#cache.clear();
      this.#cache.set(id, { value: structuredClone(value), at: now, gen });
    }
    return value;
  }

  async #page<T>(
    prefix: Deno.KvKey,
    options: ListOptions<T>,
  ): Promise<Page<T>> {
    try {
      return await this.#pageOf(prefix, options);
    } catch (error) {
      // Deno KV reads the cursor only when the listing starts.
      if (
        options.cursor && error instanceof TypeError &&
        /cursor/i.test(error.message)
      ) throw new InvalidCursorError();
      throw error;
    }
  }

  async #pageOf<T>(
    prefix: Deno.KvKey,
    options: ListOptions<T>,
  ): Promise<Page<T>> {
    const items: T[] = [];
    const iter = this.#kv.list<T>({ prefix }, {
      cursor: options.cursor || undefined,
      batchSize: Math.min(500, options.limit + 1),
    });
    for await (const entry of iter) {
      if (options.filter && !options.filter(entry.value)) continue;
      items.push(entry.value);
      if (items.length === options.limit) {
        // Is there anything after this one?
        const cursor = iter.cursor;
        for await (const next of iter) {
          if (!options.filter || options.filter(next.value)) {
            return { items, cursor };
          }
        }
        return { items };
      }
    }
    return { items };
  }

  // Domains

  /** One domain. */
  async getDomain(name: string): Promise<DomainRecord | null> {
    return await this.#get<DomainRecord>(keys.domain(name));
  }

  /** A page of domains in name order. */
  listDomains(options: ListOptions<DomainRecord>): Promise<Page<DomainRecord>> {
    return this.#page(keys.domains(), options);
  }

  /** Add a domain unless it exists. */
  addDomain(record: DomainRecord): Promise<"ok" | "exists"> {
    return this.#write(async () => {
      const result = await this.#kv.atomic()
        .check({ key: keys.domain(record.name), versionstamp: null })
        .set(keys.domain(record.name), record)
        .commit();
      return result.ok ? "ok" : "exists";
    });
  }

  /** Replace a domain record (it must exist). */
  putDomain(record: DomainRecord): Promise<void> {
    return this.#write(async () => {
      await this.#kv.set(keys.domain(record.name), record);
    });
  }

  /** Does the domain have users or aliases? */
  async domainCounts(
    name: string,
  ): Promise<{ users: number; aliases: number }> {
    let users = 0;
    let aliases = 0;
    for await (const _ of this.#kv.list({ prefix: keys.users(name) })) users++;
    for await (const _ of this.#kv.list({ prefix: keys.aliases(name) })) {
      aliases++;
    }
    return { users, aliases };
  }

  /**
   * Delete a domain with everything under it. Children go first, in batches,
   * the domain record last: a crash midway leaves the domain listed, and
   * deleting it again finishes the job.
   */
  deleteDomain(name: string): Promise<void> {
    return this.#write(async () => {
      const prefixes = [
        keys.users(name),
        keys.aliases(name),
        ["photo", name] as Deno.KvKey,
      ];
      for (const prefix of prefixes) {
        let batch = this.#kv.atomic();
        let count = 0;
        for await (const entry of this.#kv.list({ prefix })) {
          batch.delete(entry.key);
          if (++count === BATCH) {
            await batch.commit();
            batch = this.#kv.atomic();
            count = 0;
          }
        }
        if (count > 0) await batch.commit();
      }
      await this.#kv.atomic()
        .delete(keys.catchall(name))
        .delete(keys.domain(name))
        .commit();
    });
  }

  // Users

  /** One user by address. */
  async getUser(address: string): Promise<UserRecord | null> {
    const [local, domain] = splitAddress(address);
    return await this.#get<UserRecord>(keys.user(domain, local));
  }

  /**
   * One user by address, for reading only (each login): the cached record
   * itself, not a copy; a caller that changes it would change the cache.
   */
  async readUser(address: string): Promise<Readonly<UserRecord> | null> {
    const [local, domain] = splitAddress(address);
    return await this.#get<UserRecord>(keys.user(domain, local), true);
  }

  /** A page of users, of one domain or all. */
  listUsers(
    domain: string | undefined,
    options: ListOptions<UserRecord>,
  ): Promise<Page<UserRecord>> {
    return this.#page(keys.users(domain), options);
  }

  /** Add a user; the domain must exist and the address be free of users and aliases. */
  addUser(
    record: UserRecord,
  ): Promise<"ok" | "exists" | "no_domain"> {
    return this.#write(async () => {
      const [local, domain] = splitAddress(record.address);
      const [domainEntry, aliasEntry] = await this.#kv.getMany([
        keys.domain(domain),
        keys.alias(domain, local),
      ]);
      if (!domainEntry.value) return "no_domain";
      if (aliasEntry.value) return "exists";
      const result = await this.#kv.atomic()
        .check(domainEntry)
        .check(aliasEntry)
        .check({ key: keys.user(domain, local), versionstamp: null })
        .set(keys.user(domain, local), record)
        .commit();
      return result.ok ? "ok" : "exists";
    });
  }

  /** Replace a user record. */
  putUser(record: UserRecord): Promise<void> {
    return this.#write(async () => {
      const [local, domain] = splitAddress(record.address);
      await this.#kv.set(keys.user(domain, local), record);
    });
  }

  /** Delete a user and their photo. */
  deleteUser(address: string): Promise<void> {
    return this.#write(async () => {
      const [local, domain] = splitAddress(address);
      await this.#kv.atomic()
        .delete(keys.user(domain, local))
        .delete(keys.photo(domain, local))
        .commit();
    });
  }

  /** A user's photo. */
  async getPhoto(address: string): Promise<PhotoRecord | null> {
    const [local, domain] = splitAddress(address);
    return (await this.#kv.get<PhotoRecord>(keys.photo(domain, local))).value;
  }

  /** Set or (with null) remove a user's photo. */
  setPhoto(address: string, photo: PhotoRecord | null): Promise<void> {
    return this.#write(async () => {
      const [local, domain] = splitAddress(address);
      if (photo) await this.#kv.set(keys.photo(domain, local), photo);
      else await this.#kv.delete(keys.photo(domain, local));
    });
  }

  // Aliases

  /** One alias. */
  async getAlias(address: string): Promise<AliasRecord | null> {
    const [local, domain] = splitAddress(address);
    return await this.#get<AliasRecord>(keys.alias(domain, local));
  }

  /** A page of aliases, of one domain or all. */
  listAliases(
    domain: string | undefined,
    options: ListOptions<AliasRecord>,
  ): Promise<Page<AliasRecord>> {
    return this.#page(keys.aliases(domain), options);
  }

  /** Add an alias; the domain must exist and the address be free. */
  addAlias(
    record: AliasRecord,
  ): Promise<"ok" | "exists" | "no_domain"> {
    return this.#write(async () => {
      const [local, domain] = splitAddress(record.address);
      const [domainEntry, userEntry] = await this.#kv.getMany([
        keys.domain(domain),
        keys.user(domain, local),
      ]);
      if (!domainEntry.value) return "no_domain";
      if (userEntry.value) return "exists";
      const result = await this.#kv.atomic()
        .check(domainEntry)
        .check(userEntry)
        .check({ key: keys.alias(domain, local), versionstamp: null })
        .set(keys.alias(domain, local), record)
        .commit();
      return result.ok ? "ok" : "exists";
    });
  }

  /** Replace an alias record. */
  putAlias(record: AliasRecord): Promise<void> {
    return this.#write(async () => {
      const [local, domain] = splitAddress(record.address);
      await this.#kv.set(keys.alias(domain, local), record);
    });
  }

  /** Delete an alias. */
  deleteAlias(address: string): Promise<void> {
    return this.#write(async () => {
      const [local, domain] = splitAddress(address);
      await this.#kv.delete(keys.alias(domain, local));
    });
  }

  /** Every alias and catch-all that lists `address`, to drop it when it goes. */
  removeRecipient(
    address: string,
  ): Promise<{ aliases: number; catchalls: number }> {
    return this.#write(async () => {
      let aliases = 0;
      let catchalls = 0;
      for await (
        const entry of this.#kv.list<AliasRecord>({ prefix: keys.aliases() })
      ) {
        if (!entry.value.recipients.includes(address)) continue;
        const recipients = entry.value.recipients.filter((r) => r !== address);
        if (recipients.length === 0) await this.#kv.delete(entry.key);
        else {
          await this.#kv.set(entry.key, {
            ...entry.value,
            recipients,
            updated: new Date(),
          });
        }
        aliases++;
      }
      for await (
        const entry of this.#kv.list<CatchallRecord>({
          prefix: keys.catchalls(),
        })
      ) {
        if (!entry.value.recipients.includes(address)) continue;
        await this.#kv.set(entry.key, {
          ...entry.value,
          recipients: entry.value.recipients.filter((r) => r !== address),
          updated: new Date(),
        });
        catchalls++;
      }
      return { aliases, catchalls };
    });
  }

  // Catch-all

  /** A domain's catch-all (empty recipients when none is set). */
  async getCatchall(domain: string): Promise<CatchallRecord | null> {
    return await this.#get<CatchallRecord>(keys.catchall(domain));
  }

  /** Set a domain's catch-all; an empty list removes it. */
  setCatchall(record: CatchallRecord): Promise<void> {
    return this.#write(async () => {
      if (record.recipients.length === 0) {
        await this.#kv.delete(keys.catchall(record.domain));
      } else await this.#kv.set(keys.catchall(record.domain), record);
    });
  }

  // Admins

  /** One admin. */
  async getAdmin(name: string): Promise<AdminRecord | null> {
    return (await this.#kv.get<AdminRecord>(keys.admin(name))).value;
  }

  /** A page of admins. */
  listAdmins(options: ListOptions<AdminRecord>): Promise<Page<AdminRecord>> {
    return this.#page(keys.admins(), options);
  }

  /** The first login key of every enabled admin and user (what a login request without a key id is answered for). */
  async *firstKeys(): AsyncGenerator<KeyRecord> {
    for (const prefix of [keys.admins(), keys.users()]) {
      for await (
        const entry of this.#kv.list<AdminRecord | UserRecord>({ prefix }, {
          batchSize: 500,
        })
      ) {
        const first = entry.value.keys[0];
        if (first && !entry.value.disabled) yield first;
      }
    }
  }

  /** Number of admins. */
  async countAdmins(): Promise<number> {
    let n = 0;
    for await (const _ of this.#kv.list({ prefix: keys.admins() })) n++;
    return n;
  }

  /** Add an admin unless the name is taken. */
  addAdmin(record: AdminRecord): Promise<"ok" | "exists"> {
    return this.#write(async () => {
      const result = await this.#kv.atomic()
        .check({ key: keys.admin(record.name), versionstamp: null })
        .set(keys.admin(record.name), record)
        .commit();
      return result.ok ? "ok" : "exists";
    });
  }

  /** Replace an admin record. */
  putAdmin(record: AdminRecord): Promise<void> {
    return this.#write(async () => {
      await this.#kv.set(keys.admin(record.name), record);
    });
  }

  /**
   * Delete an admin unless it is the last one. Checked atomically against
   * every admin record, so two concurrent deletes cannot remove the last two.
   */
  deleteAdmin(name: string): Promise<"ok" | "last" | "missing"> {
    return this.#write(async () => {
      for (let attempt = 0; attempt < 5; attempt++) {
        const entries = [];
        for await (const e of this.#kv.list({ prefix: keys.admins() })) {
          entries.push(e);
        }
        if (!entries.some((e) => e.key[1] === name)) return "missing";
        if (entries.length <= 1) return "last";
        let op = this.#kv.atomic();
        for (const e of entries.slice(0, 9)) op = op.check(e);
        const result = await op.delete(keys.admin(name)).commit();
        if (result.ok) return "ok";
      }
      return "last";
    });
  }
}
