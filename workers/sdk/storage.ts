/**
 * Module storage: one namespace per module (shared by its versions), values
 * of any size (chunked past one KV value), listing by prefix, atomic
 * operations, and a per-module quota. The same code runs inside the module on
 * its own database, or in the core on the core's database
 * (`AMTP_MODULE_STORAGE=core`).
 *
 * Key layout (the namespaces are kv/records.ts `moduleData` and `moduleUsage`):
 * - `["mod", module, "d", ...key]` -> {@link StoredHead}: the value inline, or a
 *   chunk generation
 * - `["mod", module, "c", generation, i]` -> one chunk of a value (BSON): of
 *   a large one (written before its head), or of one whose record would
 *   spill out of SQLite's page (written with its head, which keeps the first
 *   piece: {@link LOCAL_ROW})
 * - `["mod_usage", module, "add"]` and `["mod_usage", module, "sub"]` ->
 *   bytes written and freed (`Deno.KvU64`, updated with `sum` mutations, so
 *   concurrent writers never conflict on them; usage is their difference; the
 *   quota check reads them first, so a burst of concurrent writes may
 *   overshoot the quota by at most their own sizes)
 *
 * A module never names the namespace: in its own database it is the only
 * one; in the core's, the core binds a storage to the module that called, so
 * one module cannot reach another's keys.
 *
 * @module
 */

import { BSON } from "bson";
import { concatBytes } from "../../core/wire/bytes.ts";
import { keys } from "../../kv/records.ts";
import { GroupCommit, type Verdict } from "../../shared/group_commit.ts";
import { retryLockedCommits } from "../../shared/kv_locked.ts";
import { ModuleError } from "./error.ts";

/** Bytes of a value stored inline in its head record. */
const INLINE_MAX = 60_000;
/** Bytes per chunk of a large value. */
const CHUNK = 60_000;
/**
 * Bytes of a record (its key and its value) SQLite keeps in its B-tree page.
 * Deno KV's table is an index B-tree of 4 KiB pages: a row past about 1,000
 * bytes spills into an overflow page of its own (4 KiB for the last few
 * hundred bytes). A value that would spill is written as small chunks in the
 * same atomic operation instead ({@link SMALL_CHUNK} bytes each).
 */
const LOCAL_ROW = 900;
/** Bytes per chunk of a value split to stay within {@link LOCAL_ROW}. */
const SMALL_CHUNK = 800;
/** Bytes of a split value's head besides its first piece (an upper estimate). */
const HEAD_BYTES = 80;
/**
 * Largest value split so (ten chunks: one read). Past it an overflow page's
 * unused tail is a small part of the value, and more chunks would cost reads.
 */
const SPLIT_MAX = 8_000;
/** Chunks written per atomic operation. */
const CHUNKS_PER_OP = 8;
/** Parts of a key. */
const MAX_KEY_PARTS = 8;
/** Items of one list page. */
const MAX_LIST = 1000;
/** Milliseconds a usage figure read from KV is trusted (plus own writes). */
const USAGE_READ_MS = 1000;
/** Sizes remembered for writes without a read (two generations of half). */
const SEEN_MAX = 20_000;

interface Head {
  size: number;
  value?: unknown;
  gen?: string;
  chunks?: number;
  /**
   * The first piece of a value split to stay within {@link LOCAL_ROW},
   * kept in its head (one record less); its chunks hold the rest. Absent in
   * values split before 2026-11-28 and those whose key leaves no room.
   */
  first?: Uint8Array;
}

/**
 * A head as stored: one holding its value as `[size, value]` (since
 * 2026-11-28: a record's bytes less its field names), else the {@link Head}
 * object (a split value's head, and every head written before).
 */
type StoredHead = Head | [number, unknown];

/** A stored head read back. */
function headOf(raw: StoredHead | null): Head | null {
  return Array.isArray(raw) ? { size: raw[0], value: raw[1] } : raw;
}

/** The stored form of a head. */
function storedHead(head: Head): StoredHead {
  return head.gen === undefined ? [head.size, head.value] : head;
}

/** A KV entry of a head, its head read back. */
function headEntry(
  entry: Deno.KvEntryMaybe<StoredHead>,
): Deno.KvEntryMaybe<Head> {
  return entry.value === null
    ? entry as Deno.KvEntryMaybe<Head>
    : { ...entry, value: headOf(entry.value)! };
}

/** A storage request the module's storage cannot carry out. */
export class StorageError extends ModuleError {
  /** Create the error: `invalid_parameter` (bad key, op) or `limit_exceeded` (quota, size). */
  constructor(
    code: "invalid_parameter" | "limit_exceeded",
    message: string,
    data?: unknown,
  ) {
    super(code, message, data);
    this.name = "StorageError";
  }
}

/** A key in module storage: 1 to 8 parts, strings of at most 256 characters or numbers. */
export type StorageKey = (string | number)[];

/** An entry read from storage. */
export interface StorageEntry<T = unknown> {
  /** Its key. */
  key: StorageKey;
  /** Its value. */
  value: T;
  /** Changes on every write: pass to an atomic `check`. */
  versionstamp: string;
}

/**
 * One operation of {@link ModuleStorage.atomic}. A `set` with `fresh: true`
 * says the key is new (an id never used before): its old value is not read,
 * and were there one, its size would stay counted in the usage.
 */
export type AtomicOp =
  | { op: "set"; key: StorageKey; value: unknown; fresh?: boolean }
  | { op: "delete"; key: StorageKey }
  | { op: "check"; key: StorageKey; versionstamp: string | null };

/** The module's own storage namespace (shared by its versions). */
export interface ModuleStorage {
  /** Read one value. */
  get<T = unknown>(key: StorageKey): Promise<StorageEntry<T> | null>;
  /** Read several values at once (null for those that do not exist). */
  getMany<T = unknown>(keys: StorageKey[]): Promise<(StorageEntry<T> | null)[]>;
  /** Write one value (any value KV can hold; large values are chunked). */
  set(key: StorageKey, value: unknown): Promise<void>;
  /** Delete one value. */
  delete(key: StorageKey): Promise<void>;
  /**
   * List by key prefix, in key order, a page at a time; `start` (a full key
   * under the prefix) begins the listing there, inclusive; `end` (a full key
   * under the prefix) ends it there, exclusive.
   */
  list<T = unknown>(
    prefix: StorageKey,
    options?: {
      limit?: number;
      cursor?: string;
      reverse?: boolean;
      start?: StorageKey;
      end?: StorageKey;
    },
  ): Promise<{ items: StorageEntry<T>[]; cursor?: string }>;
  /**
   * Apply checks and writes all or nothing (at most {@link MAX_ATOMIC_OPS}
   * operations, {@link MAX_ATOMIC_CHECKS} of them checks); false when a check
   * failed.
   */
  atomic(ops: AtomicOp[]): Promise<boolean>;
  /** {@link atomic}, answering the commit's versionstamp, or null when a check failed. */
  commit(ops: AtomicOp[]): Promise<string | null>;
}

/** Operations of one atomic write. */
export const MAX_ATOMIC_OPS = 900;
/** Checks of one atomic write. */
export const MAX_ATOMIC_CHECKS = 100;

function checkKey(key: unknown, what = "key"): (string | number)[] {
  if (!Array.isArray(key) || key.length > MAX_KEY_PARTS) {
    throw new StorageError(
      "invalid_parameter",
      `${what} must be a list of at most ${MAX_KEY_PARTS} parts`,
    );
  }
  for (const part of key) {
    const ok = (typeof part === "string" && part.length <= 256) ||
      (typeof part === "number" && Number.isFinite(part));
    if (!ok) {
      throw new StorageError(
        "invalid_parameter",
        `${what} parts are strings (at most 256 characters) or numbers`,
      );
    }
  }
  return key as (string | number)[];
}

function sizeOf(value: unknown): number {
  return BSON.calculateObjectSize({ v: value });
}

/** A validated operation; `head` is what a write stores. */
interface Op {
  op: "set" | "delete" | "check";
  key: StorageKey;
  head?: Head;
  /** The chunks of `head` written in the same commit (`head.gen`). */
  pieces?: Uint8Array[];
  size: number;
  versionstamp?: string | null;
  fresh?: boolean;
}

/** A new chunk generation: 128 random bits, base64url. */
function newGeneration(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-")
    .replace(/\//g, "_").replace(/=+$/, "");
}

/** KV mutations of an operation (its chunks included). */
function mutationsOf(o: Op): number {
  return o.op === "check" ? 0 : 1 + (o.pieces?.length ?? 0);
}

/** An atomic operation waiting for its group commit. */
interface Pending {
  ops: Op[];
  /** The commit's versionstamp, or null when a check failed. */
  resolve: (versionstamp: string | null) => void;
  reject: (error: unknown) => void;
}

/** Bounds of one group commit (Deno KV allows 100 checks, 1,000 mutations, 800 KiB). */
const GROUP_CHECKS = 100;
const GROUP_MUTATIONS = 500;
const GROUP_BYTES = 400_000;

/** A head's size and chunk reference, without its (inline) value. */
function withoutValue(head: Head): Head {
  return head.gen === undefined
    ? { size: head.size }
    : { size: head.size, gen: head.gen, chunks: head.chunks };
}

/**
 * A value read back from BSON with its bytes as plain `Uint8Array`s (BSON
 * gives Node's `Buffer`), as a value stored inline reads.
 */
function plainBytes(value: unknown): unknown {
  if (value instanceof Uint8Array) {
    return value.constructor === Uint8Array
      ? value
      : new Uint8Array(value.buffer, value.byteOffset, value.byteLength);
  }
  if (Array.isArray(value)) return value.map(plainBytes);
  if (
    value !== null && typeof value === "object" &&
    Object.getPrototypeOf(value) === Object.prototype
  ) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = plainBytes(v);
    return out;
  }
  return value;
}

function keyId(key: StorageKey): string {
  return JSON.stringify(key);
}

/**
 * The storage of one module in a KV database. Atomic operations that arrive
 * while a commit is running are committed together in the next one (group
 * commit, shared/group_commit.ts): under load one KV commit carries the
 * writes of many requests, each still all or nothing with its own checks.
 */
export class KvStorage implements ModuleStorage {
  readonly #kv: Deno.Kv;
  readonly #name: string;
  readonly #quota: number;
  /** Atomic operations waiting for a commit, committed in groups. */
  readonly #writes: GroupCommit<Pending>;
  /**
   * Sizes of values last seen, by key and versionstamp: a write checked
   * against one needs no read. The newer generation, and the one before it,
   * dropped whole when the newer fills (an LRU Map that deletes its oldest
   * entry one at a time cost 19 µs per write here: its iterator walks the
   * deleted slots).
   */
  #seen = new Map<string, { versionstamp: string; head: Head }>();
  #seenBefore = new Map<string, { versionstamp: string; head: Head }>();
  #usage?: { bytes: number; at: number };

  /** Bind a storage to the module `name` with a quota in bytes. */
  constructor(kv: Deno.Kv, name: string, quota: number) {
    retryLockedCommits(kv);
    this.#kv = kv;
    this.#name = name;
    this.#quota = quota;
    this.#writes = new GroupCommit<Pending>({
      choose: () => this.#choose(),
      commit: (group) => this.#commitGroup(group),
      alone: (p) => this.#commitAlone(p),
      fail: (p, error) => p.reject(error),
    });
  }

  #head(key: StorageKey): Deno.KvKey {
    return [...keys.moduleData(this.#name), "d", ...key];
  }

  #chunk(gen: string, i: number): Deno.KvKey {
    return [...keys.moduleData(this.#name), "c", gen, i];
  }

  #usageKey(which: "add" | "sub"): Deno.KvKey {
    return [...keys.moduleUsage(this.#name), which];
  }

  /**
   * Bytes in use as this storage last read them, plus its own writes since:
   * read again after {@link USAGE_READ_MS} (other versions of the module may
   * write too) or when a write would pass the quota.
   */
  async #usageNow(force = false): Promise<number> {
    const now = Date.now();
    if (force || !this.#usage || now - this.#usage.at > USAGE_READ_MS) {
      this.#usage = { bytes: await this.usage(), at: now };
    }
    return this.#usage.bytes;
  }

  /** Bytes in use. */
  async usage(): Promise<number> {
    const [added, freed] = await this.#kv.getMany<Deno.KvU64[]>([
      this.#usageKey("add"),
      this.#usageKey("sub"),
    ]);
    return Number((added.value?.value ?? 0n) - (freed.value?.value ?? 0n));
  }

  async #read(head: Head): Promise<unknown> {
    if (head.gen === undefined) return head.value;
    const keys = Array.from(
      { length: head.chunks ?? 0 },
      (_, i) => this.#chunk(head.gen!, i),
    );
    const parts: Uint8Array[] = head.first ? [head.first] : [];
    for (let i = 0; i < keys.length; i += 10) {
      const batch = await this.#kv.getMany<Uint8Array[]>(keys.slice(i, i + 10));
      for (const entry of batch) {
        if (!entry.value) {
          throw new Error("a chunk of a stored value is missing");
        }
        parts.push(entry.value as Uint8Array);
      }
    }
    return plainBytes(
      BSON.deserialize(concatBytes(...parts), { promoteBuffers: true }).v,
    );
  }

  #remember(key: StorageKey, versionstamp: string, head: Head): void {
    const id = keyId(key);
    this.#seenBefore.delete(id);
    this.#seen.set(id, { versionstamp, head });
    if (this.#seen.size >= SEEN_MAX / 2) {
      this.#seenBefore = this.#seen;
      this.#seen = new Map();
    }
  }

  #forget(id: string): void {
    this.#seen.delete(id);
    this.#seenBefore.delete(id);
  }

  async #entry<T>(
    key: StorageKey,
    entry: Deno.KvEntryMaybe<Head>,
  ): Promise<StorageEntry<T> | null> {
    if (!entry.value) return null;
    this.#remember(key, entry.versionstamp!, withoutValue(entry.value));
    return {
      key,
      value: await this.#read(entry.value) as T,
      versionstamp: entry.versionstamp!,
    };
  }

  /** Read one value. */
  async get<T = unknown>(rawKey: StorageKey): Promise<StorageEntry<T> | null> {
    const key = checkKey(rawKey);
    return await this.#entry<T>(
      key,
      headEntry(await this.#kv.get<StoredHead>(this.#head(key))),
    );
  }

  /** Read several values (at most {@link MAX_LIST}). */
  async getMany<T = unknown>(
    rawKeys: StorageKey[],
  ): Promise<(StorageEntry<T> | null)[]> {
    if (!Array.isArray(rawKeys) || rawKeys.length > MAX_LIST) {
      throw new StorageError(
        "invalid_parameter",
        `keys must be a list of at most ${MAX_LIST} keys`,
      );
    }
    const keys = rawKeys.map((k) => checkKey(k));
    // KV reads 10 keys per call: the calls go side by side.
    const parts: StorageKey[][] = [];
    for (let i = 0; i < keys.length; i += 10) parts.push(keys.slice(i, i + 10));
    const read = await Promise.all(parts.map(async (part) => {
      const entries = (await this.#kv.getMany<StoredHead[]>(
        part.map((k) => this.#head(k)),
      )).map(headEntry);
      return await Promise.all(
        part.map((k, j) => this.#entry<T>(k, entries[j])),
      );
    }));
    return read.flat();
  }

  #usageUpdate(op: Deno.AtomicOperation, delta: number): void {
    if (delta > 0) op.sum(this.#usageKey("add"), BigInt(delta));
    if (delta < 0) op.sum(this.#usageKey("sub"), BigInt(-delta));
  }

  async #ensureRoom(delta: number): Promise<void> {
    if (delta <= 0) return;
    const used = await this.#usageNow(true);
    if (used + delta > this.#quota) {
      throw new StorageError(
        "limit_exceeded",
        `storage quota exceeded: ${used} of ${this.#quota} bytes used, ${delta} more asked`,
      );
    }
  }

  /** Write one value of any size. */
  async set(rawKey: StorageKey, value: unknown): Promise<void> {
    const key = checkKey(rawKey);
    const size = sizeOf(value);
    if (size <= INLINE_MAX) {
      await this.#enqueue(
        this.#split([{ op: "set", key, size, head: { size, value } }]),
      );
      return;
    }
    const bytes = BSON.serialize({ v: value });
    const gen = crypto.randomUUID();
    const chunks = Math.ceil(bytes.length / CHUNK);
    // Check the quota before writing any chunk.
    const old = headEntry(await this.#kv.get<StoredHead>(this.#head(key)));
    await this.#ensureRoom(size - (old.value?.size ?? 0));
    for (let i = 0; i < chunks; i += CHUNKS_PER_OP) {
      const op = this.#kv.atomic();
      for (let j = i; j < Math.min(chunks, i + CHUNKS_PER_OP); j++) {
        op.set(this.#chunk(gen, j), bytes.slice(j * CHUNK, (j + 1) * CHUNK));
      }
      await op.commit();
    }
    const head: Head = { size, gen, chunks };
    try {
      await this.#enqueue([{ op: "set", key, size, head }]);
    } catch (error) {
      await this.#deleteChunks(head);
      throw error;
    }
  }

  async #deleteChunks(head: Head): Promise<void> {
    for (let i = 0; i < (head.chunks ?? 0); i += 50) {
      const op = this.#kv.atomic();
      for (let j = i; j < Math.min(head.chunks!, i + 50); j++) {
        op.delete(this.#chunk(head.gen!, j));
      }
      await op.commit();
    }
  }

  /** Delete one value. */
  async delete(rawKey: StorageKey): Promise<void> {
    const key = checkKey(rawKey);
    await this.#enqueue([{ op: "delete", key, size: 0 }]);
  }

  /** List by prefix. */
  async list<T = unknown>(
    rawPrefix: StorageKey,
    options: {
      limit?: unknown;
      cursor?: unknown;
      reverse?: unknown;
      start?: unknown;
      end?: unknown;
    } = {},
  ): Promise<{ items: StorageEntry<T>[]; cursor?: string }> {
    const prefix = checkKey(rawPrefix, "prefix");
    const start = options.start === undefined || options.start === null
      ? undefined
      : checkKey(options.start, "start");
    const end = options.end === undefined || options.end === null
      ? undefined
      : checkKey(options.end, "end");
    const under = (k: StorageKey, what: string) => {
      if (
        k.length < prefix.length ||
        prefix.some((part, i) => part !== k[i])
      ) {
        throw new StorageError(
          "invalid_parameter",
          `${what} must be a key under the prefix`,
        );
      }
    };
    const limit = typeof options.limit === "number"
      ? Math.max(1, Math.min(MAX_LIST, Math.floor(options.limit)))
      : 100;
    if (start) under(start, "start");
    if (end) under(end, "end");
    const selector: Deno.KvListSelector = start && end
      ? { start: this.#head(start), end: this.#head(end) }
      : start
      ? { prefix: this.#head(prefix), start: this.#head(start) }
      : end
      ? { prefix: this.#head(prefix), end: this.#head(end) }
      : { prefix: this.#head(prefix) };
    const iter = this.#kv.list<StoredHead>(selector, {
      limit: limit + 1,
      cursor: typeof options.cursor === "string" && options.cursor
        ? options.cursor
        : undefined,
      reverse: options.reverse === true,
    });
    const items: StorageEntry<T>[] = [];
    let cursor: string | undefined;
    let more = false;
    try {
      for await (const entry of iter) {
        if (items.length === limit) {
          more = true; // the extra entry asked for exists
          break;
        }
        items.push({
          key: entry.key.slice(3) as StorageKey,
          value: await this.#read(headOf(entry.value)!) as T,
          versionstamp: entry.versionstamp,
        });
        cursor = iter.cursor;
      }
    } catch (error) {
      // Deno KV refuses a cursor it did not give only once iteration starts.
      if (
        typeof options.cursor === "string" && error instanceof TypeError &&
        /cursor/i.test(error.message)
      ) {
        throw new StorageError(
          "invalid_parameter",
          'parameter "cursor" is not a cursor this list gave',
          { parameter: "cursor" },
        );
      }
      throw error;
    }
    return more ? { items, cursor } : { items };
  }

  /**
   * Apply checks, sets and deletes all or nothing (inline-sized values only).
   * Returns false when one of the module's checks failed.
   */
  async atomic(rawOps: AtomicOp[]): Promise<boolean> {
    return await this.commit(rawOps) !== null;
  }

  /**
   * {@link atomic}, answering the versionstamp of the commit (the one every
   * written key now has), or null when one of the module's checks failed.
   */
  async commit(rawOps: AtomicOp[]): Promise<string | null> {
    if (
      !Array.isArray(rawOps) || rawOps.length === 0 ||
      rawOps.length > MAX_ATOMIC_OPS
    ) {
      throw new StorageError(
        "invalid_parameter",
        `ops must be a list of 1 to ${MAX_ATOMIC_OPS} operations`,
      );
    }
    if (rawOps.filter((o) => o?.op === "check").length > MAX_ATOMIC_CHECKS) {
      throw new StorageError(
        "invalid_parameter",
        `at most ${MAX_ATOMIC_CHECKS} checks in one atomic operation`,
      );
    }
    const ops = rawOps.map((raw): Op => {
      const o = raw as {
        op?: unknown;
        key?: unknown;
        value?: unknown;
        versionstamp?: unknown;
        fresh?: unknown;
      };
      if (o.op !== "set" && o.op !== "delete" && o.op !== "check") {
        throw new StorageError(
          "invalid_parameter",
          'op is "set", "delete" or "check"',
        );
      }
      const key = checkKey(o.key);
      if (o.op === "check") {
        if (
          o.versionstamp !== null &&
          !(typeof o.versionstamp === "string" &&
            /^[0-9a-f]{20}$/.test(o.versionstamp))
        ) {
          throw new StorageError(
            "invalid_parameter",
            "check needs a versionstamp (as read, or null for absent)",
          );
        }
        return { op: "check", key, size: 0, versionstamp: o.versionstamp };
      }
      if (o.op === "delete") return { op: "delete", key, size: 0 };
      const size = sizeOf(o.value);
      if (size > INLINE_MAX) {
        throw new StorageError(
          "limit_exceeded",
          `values in an atomic operation are at most ${INLINE_MAX} bytes`,
        );
      }
      return {
        op: "set",
        key,
        size,
        head: { size, value: o.value },
        fresh: o.fresh === true,
      };
    });
    return await this.#enqueue(this.#split(ops));
  }

  /**
   * Values whose record would spill out of SQLite's page (see
   * {@link LOCAL_ROW}) become a head and small chunks written in the same
   * atomic operation, while the operation stays within its bound of
   * mutations (past it they stay inline, as they always could).
   */
  #split(ops: Op[]): Op[] {
    let total = ops.reduce((n, o) => n + mutationsOf(o), 2);
    return ops.map((o) => {
      if (o.op !== "set" || o.head?.gen !== undefined) return o;
      const keyBytes = JSON.stringify(this.#head(o.key)).length;
      if (o.size + keyBytes <= LOCAL_ROW || o.size > SPLIT_MAX) return o;
      const bytes = BSON.serialize({ v: o.head!.value });
      const count = Math.ceil(bytes.length / SMALL_CHUNK);
      const each = Math.ceil(bytes.length / count);
      const pieces = Array.from(
        { length: count },
        (_, i) => bytes.slice(i * each, (i + 1) * each),
      );
      // The first piece stays in the head when its record still fits: a
      // copy of its own (a view is stored with its whole buffer).
      const first = count > 1 && keyBytes + each + HEAD_BYTES <= LOCAL_ROW
        ? new Uint8Array(pieces.shift()!)
        : undefined;
      if (total + pieces.length > GROUP_MUTATIONS) return o;
      total += pieces.length;
      const gen = newGeneration();
      return {
        ...o,
        head: first
          ? { size: o.size, gen, chunks: pieces.length, first }
          : { size: o.size, gen, chunks: pieces.length },
        pieces,
      };
    });
  }

  #enqueue(ops: Op[]): Promise<string | null> {
    return new Promise((resolve, reject) => {
      this.#writes.submit({ ops, resolve, reject });
    });
  }

  /**
   * Which waiting operations share a commit: in order, those that touch
   * keys no earlier waiting operation touches, within KV's bounds (a later
   * operation on the same keys stays behind the earlier one).
   */
  #choose(): (p: Pending) => Verdict {
    const touched = new Set<string>();
    let members = 0;
    let checks = 0;
    let mutations = 2; // the usage counters
    let bytes = 0;
    return (p) => {
      const ids = p.ops.map((o) => keyId(o.key));
      const c = p.ops.filter((o) => o.op === "check").length;
      const m = p.ops.reduce((n, o) => n + mutationsOf(o), 0);
      const b = p.ops.reduce((n, o) => n + o.size + 200, 0);
      const fits = members === 0 ||
        (checks + c <= GROUP_CHECKS && mutations + m <= GROUP_MUTATIONS &&
          bytes + b <= GROUP_BYTES && !ids.some((id) => touched.has(id)));
      for (const id of ids) touched.add(id);
      if (!fits) return "skip";
      members++;
      checks += c;
      mutations += m;
      bytes += b;
      return "join";
    };
  }

  /** Read the current heads of the keys of `ops`, ten at a time, in parallel. */
  async #current(ops: Op[]): Promise<Map<string, Deno.KvEntryMaybe<Head>>> {
    const keys = new Map<string, StorageKey>();
    for (const o of ops) keys.set(keyId(o.key), o.key);
    const list = [...keys];
    const reads: Promise<Deno.KvEntryMaybe<Head>[]>[] = [];
    for (let i = 0; i < list.length; i += 10) {
      reads.push(
        this.#kv.getMany<StoredHead[]>(
          list.slice(i, i + 10).map(([, key]) => this.#head(key)),
        ).then((entries) => entries.map(headEntry)),
      );
    }
    const entries = (await Promise.all(reads)).flat();
    return new Map(list.map(([id], i) => [id, entries[i]]));
  }

  /**
   * What each written key of `group` holds now, read only where it is not
   * known: a key checked against "absent" or against a versionstamp whose
   * size was seen, or a `fresh` one, needs no read.
   */
  async #oldHeads(group: Pending[]): Promise<Map<string, Head | null>> {
    const known = new Map<string, Head | null>();
    const unknown: Op[] = [];
    for (const p of group) {
      const checked = new Map<string, string | null>();
      for (const o of p.ops) {
        if (o.op === "check") checked.set(keyId(o.key), o.versionstamp ?? null);
      }
      for (const o of p.ops) {
        if (o.op === "check") continue;
        const id = keyId(o.key);
        const stamp = checked.get(id);
        const seen = this.#seen.get(id) ?? this.#seenBefore.get(id);
        if (o.fresh || stamp === null) known.set(id, null);
        else if (stamp !== undefined && seen?.versionstamp === stamp) {
          known.set(id, seen.head);
        } else unknown.push(o);
      }
    }
    if (unknown.length > 0) {
      const read = await this.#current(unknown);
      for (const [id, entry] of read) known.set(id, entry.value);
    }
    return known;
  }

  /**
   * One KV commit for every operation of `group`, reading only what it must.
   * Returns the operations still to do one by one (which tells a failed check
   * from a conflict): none, or all of them when the commit did not succeed or
   * the group would pass the quota.
   */
  async #commitGroup(group: Pending[]): Promise<Pending[]> {
    const old = await this.#oldHeads(group);
    const op = this.#kv.atomic();
    const freed: Head[] = [];
    const written: Op[] = [];
    let delta = 0;
    for (const p of group) {
      for (const o of p.ops) {
        const head = this.#head(o.key);
        if (o.op === "check") {
          op.check({ key: head, versionstamp: o.versionstamp ?? null });
          continue;
        }
        // Each key is in one operation of the group: its old size is exact.
        const before = old.get(keyId(o.key)) ?? null;
        delta += o.size - (before?.size ?? 0);
        if (before?.gen && before.gen !== o.head?.gen) freed.push(before);
        if (o.op === "set") this.#write(op, head, o);
        else op.delete(head);
        written.push(o);
      }
    }
    if (delta > 0 && await this.#usageNow() + delta > this.#quota) {
      return group; // one by one: each is told about the quota itself
    }
    this.#usageUpdate(op, delta);
    const result = await op.commit();
    if (!result.ok) return group;
    if (this.#usage) this.#usage.bytes += delta;
    for (const o of written) {
      if (o.op === "set") {
        this.#remember(o.key, result.versionstamp, withoutValue(o.head!));
      } else this.#forget(keyId(o.key));
    }
    for (const p of group) p.resolve(result.versionstamp);
    for (const head of freed) await this.#deleteChunks(head);
    return [];
  }

  /** Add a set and the chunks it carries to an atomic operation. */
  #write(op: Deno.AtomicOperation, head: Deno.KvKey, o: Op): void {
    op.set(head, storedHead(o.head!));
    o.pieces?.forEach((piece, i) =>
      op.set(this.#chunk(o.head!.gen!, i), piece)
    );
  }

  /** Commit one operation on its own, retrying when others' writes conflict. */
  async #commitAlone(p: Pending): Promise<void> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const current = await this.#current(p.ops);
      if (
        p.ops.some((o) =>
          o.op === "check" &&
          current.get(keyId(o.key))!.versionstamp !== o.versionstamp
        )
      ) {
        p.resolve(null);
        return;
      }
      const op = this.#kv.atomic();
      const freed: Head[] = [];
      let delta = 0;
      // Old values are checked too, when KV's 100 checks allow: the usage
      // delta is then exact even against writers in other processes.
      const checkOld = p.ops.length <= 100;
      for (const o of p.ops) {
        const head = this.#head(o.key);
        const old = current.get(keyId(o.key))!;
        if (o.op === "check") {
          op.check({ key: head, versionstamp: o.versionstamp ?? null });
          continue;
        }
        if (checkOld) op.check(old);
        delta += o.size - (old.value?.size ?? 0);
        if (old.value?.gen && old.value.gen !== o.head?.gen) {
          freed.push(old.value);
        }
        if (o.op === "set") this.#write(op, head, o);
        else op.delete(head);
      }
      await this.#ensureRoom(delta);
      this.#usageUpdate(op, delta);
      const result = await op.commit();
      if (result.ok) {
        if (this.#usage) this.#usage.bytes += delta;
        for (const o of p.ops) {
          if (o.op === "set") {
            this.#remember(o.key, result.versionstamp, withoutValue(o.head!));
          } else if (o.op === "delete") this.#forget(keyId(o.key));
        }
        p.resolve(result.versionstamp);
        for (const head of freed) await this.#deleteChunks(head);
        return;
      }
    }
    throw new Error("a storage operation kept conflicting");
  }
}
