/**
 * Login guard records, shared by every server process through KV: failed
 * logins counted per (account, source), per source and per account, and the
 * sources each account logged in from (keyed hashes only).
 *
 * Counting is exact under concurrency: failures that arrive while a count
 * commits are counted together in the next commit, which checks every record
 * it read (another process's count makes it read again).
 *
 * Records read are reused for {@link CACHE_MS} (every login reads them
 * twice): this process's own writes are seen at once, another process's
 * (a count, an offline unblock) up to 2 s late, as with tokens.
 *
 * @module
 */

import { KvGroupCommit } from "./group_commit.ts";
import {
  type FailureRecord,
  type FailureScope,
  keys,
  type KnownSourcesRecord,
  pairId,
  splitPair,
} from "./records.ts";

/** A record is forgotten this long after its block ends. */
const FORGET_MS = 86_400_000;
/** Failures counted in one commit at most (three records each). */
const GROUP = 30;
/** Attempts with checks before a count is written without them. */
const ATTEMPTS = 5;
/** Milliseconds a record read is reused. */
export const CACHE_MS = 2000;
/** Records cached at most. */
const CACHE_MAX = 20_000;

/** What a login attempt's checks read, in one KV read. */
export interface GuardRecords {
  /** This account from this source. */
  pair: FailureRecord | null;
  /** This source, every account. */
  ip: FailureRecord | null;
  /** This account, every source. */
  account: FailureRecord | null;
}

/** One failure to count: the records it touches and how each changes. */
interface Counting {
  targets: { scope: FailureScope; id: string }[];
  next: (scope: FailureScope, old: FailureRecord | null) => FailureRecord;
  resolve: () => void;
  reject: (error: unknown) => void;
}

function keyText(key: Deno.KvKey): string {
  return JSON.stringify(key);
}

/** Failed-login and known-source storage. */
export class FailureStore {
  readonly #kv: Deno.Kv;
  readonly #writes: KvGroupCommit;
  #queue: Counting[] = [];
  #running = false;
  readonly #cache = new Map<string, { value: unknown; at: number }>();
  /** Raised by every write: a read that overlapped one is not cached. */
  #gen = 0;

  /** Wrap an open KV; success writes are committed with concurrent writes by `writes`. */
  constructor(kv: Deno.Kv, writes = new KvGroupCommit(kv)) {
    this.#kv = kv;
    this.#writes = writes;
  }

  /** Values of `wanted`, from the cache where fresh, the rest in one read. */
  async #read(wanted: Deno.KvKey[]): Promise<unknown[]> {
    const now = Date.now();
    const out: unknown[] = [];
    const missing: number[] = [];
    wanted.forEach((key, i) => {
      const hit = this.#cache.get(keyText(key));
      if (hit && now - hit.at < CACHE_MS) out[i] = hit.value;
      else missing.push(i);
    });
    if (missing.length === 0) return out;
    const gen = this.#gen;
    const entries = await this.#kv.getMany<unknown[]>(
      missing.map((i) => wanted[i]),
    );
    entries.forEach((entry, j) => {
      out[missing[j]] = entry.value;
      if (gen === this.#gen) this.#cached(entry.key, entry.value, now);
    });
    return out;
  }

  #cached(key: Deno.KvKey, value: unknown, at = Date.now()): void {
    if (this.#cache.size >= CACHE_MAX) this.#cache.clear();
    this.#cache.set(keyText(key), { value, at });
  }

  /** The records of an attempt of `account` from `source`, and the account's known sources. */
  async guardRecords(
    account: string,
    source: string,
  ): Promise<GuardRecords & { known: KnownSourcesRecord | null }> {
    const [pair, ip, whole, known] = await this.#read([
      keys.failure("account_ip", pairId(account, source)),
      keys.failure("ip", source),
      keys.failure("account", account),
      keys.knownSources(account),
    ]);
    return {
      pair: pair as FailureRecord | null,
      ip: ip as FailureRecord | null,
      account: whole as FailureRecord | null,
      known: known as KnownSourcesRecord | null,
    };
  }

  /** The record of one scope and id. */
  async get(scope: FailureScope, id: string): Promise<FailureRecord | null> {
    return (await this.#kv.get<FailureRecord>(keys.failure(scope, id))).value;
  }

  /**
   * Count one failure in each of `targets`; `next` makes a record's new state
   * from its current one. Resolves when committed.
   */
  count(
    targets: { scope: FailureScope; id: string }[],
    next: (scope: FailureScope, old: FailureRecord | null) => FailureRecord,
  ): Promise<void> {
    return new Promise((resolve, reject) => {
      this.#queue.push({ targets, next, resolve, reject });
      if (!this.#running) this.#run();
    });
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length > 0) {
        const group = this.#queue.splice(0, GROUP);
        try {
          await this.#countGroup(group);
          for (const c of group) c.resolve();
        } catch (error) {
          for (const c of group) c.reject(error);
        }
      }
    } finally {
      this.#running = false;
    }
  }

  async #countGroup(group: Counting[]): Promise<void> {
    const wanted = new Map<string, Deno.KvKey>();
    for (const c of group) {
      for (const t of c.targets) {
        const key = keys.failure(t.scope, t.id);
        wanted.set(keyText(key), key);
      }
    }
    const all = [...wanted.values()];
    for (let attempt = 1;; attempt++) {
      const entries: Deno.KvEntryMaybe<FailureRecord>[] = [];
      for (let i = 0; i < all.length; i += 10) {
        entries.push(
          ...await this.#kv.getMany<FailureRecord[]>(all.slice(i, i + 10)),
        );
      }
      const current = new Map(entries.map((e) => [keyText(e.key), e.value]));
      for (const c of group) {
        for (const t of c.targets) {
          const id = keyText(keys.failure(t.scope, t.id));
          current.set(id, c.next(t.scope, current.get(id) ?? null));
        }
      }
      let op = this.#kv.atomic();
      // The last attempt writes without checks: a count is never lost to a crash.
      if (attempt < ATTEMPTS) {
        for (const entry of entries) op = op.check(entry);
      }
      const now = Date.now();
      for (const [id, record] of current) {
        if (!record) continue;
        op = op.set(wanted.get(id)!, record, {
          expireIn: Math.max(0, record.blocked_until - now) + FORGET_MS,
        });
      }
      this.#gen++;
      if ((await op.commit()).ok) {
        for (const [id, record] of current) {
          if (record) this.#cached(wanted.get(id)!, record);
        }
        return;
      }
    }
  }

  /** Forget one record (a successful login clears its account_ip record). */
  async delete(scope: FailureScope, id: string): Promise<boolean> {
    const key = keys.failure(scope, id);
    const had = (await this.#kv.get(key)).value !== null;
    this.#gen++;
    this.#cached(key, null);
    if (had) {
      await this.#writes.write([], {
        mutations: 1,
        mutate: (op) => op.delete(key),
      });
    }
    return had;
  }

  /**
   * Lift blocks: `account` also lifts the account's account_ip records, `ip`
   * the source's account_ip records. Returns how many records went.
   */
  async unblock(scope: FailureScope, id: string): Promise<number> {
    const doomed: Deno.KvKey[] = [];
    const own = keys.failure(scope, id);
    if ((await this.#kv.get(own)).value !== null) doomed.push(own);
    if (scope === "account") {
      for await (
        const entry of this.#kv.list({
          prefix: keys.failures("account_ip", id),
        })
      ) doomed.push(entry.key);
    } else if (scope === "ip") {
      for await (
        const entry of this.#kv.list<FailureRecord>({
          prefix: keys.failures("account_ip"),
        })
      ) {
        if (splitPair(entry.value.id)[1] === id) doomed.push(entry.key);
      }
    }
    this.#gen++;
    this.#cache.clear();
    for (let i = 0; i < doomed.length; i += 100) {
      let op = this.#kv.atomic();
      for (const key of doomed.slice(i, i + 100)) op = op.delete(key);
      await op.commit();
    }
    return doomed.length;
  }

  /** Every record (for the admin list of blocks). */
  async list(): Promise<FailureRecord[]> {
    const out: FailureRecord[] = [];
    for await (
      const entry of this.#kv.list<FailureRecord>({ prefix: keys.failures() })
    ) out.push(entry.value);
    return out;
  }

  /**
   * Remember that `account` logged in from the source hashed as `hash`
   * (most recent first, at most `max`). Concurrent updates of one account
   * are retried, so none is lost.
   */
  async remember(
    account: string,
    hash: string,
    options: { max: number; now: Date },
  ): Promise<void> {
    const key = keys.knownSources(account);
    for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
      const entry = await this.#kv.get<KnownSourcesRecord>(key);
      const sources = [
        { hash, last: options.now },
        ...(entry.value?.sources ?? []).filter((s) => s.hash !== hash),
      ].slice(0, options.max);
      this.#gen++;
      const ok = await this.#writes.write([entry], {
        mutations: 1,
        mutate: (op) => op.set(key, { sources }),
      });
      if (ok) {
        this.#cached(key, { sources });
        return;
      }
    }
  }
}
