/**
 * Module storage through the core: one namespace per module (shared by its
 * versions), values of any size (chunked past one KV value), listing by
 * prefix, atomic operations, and a per-module quota.
 *
 * Key layout:
 * - `["mod", module, "d", ...key]` -> {@link Head}: the value inline, or a
 *   chunk generation
 * - `["mod", module, "c", generation, i]` -> one chunk of a large value (BSON)
 * - `["mod_usage", module, "add"]` and `["mod_usage", module, "sub"]` ->
 *   bytes written and freed (`Deno.KvU64`, updated with `sum` mutations, so
 *   concurrent writers never conflict on them; usage is their difference; the
 *   quota check reads them first, so a burst of concurrent writes may
 *   overshoot the quota by at most their own sizes)
 *
 * A module never names the namespace: the host binds a storage to the module
 * that sent the request, so one module cannot reach another's keys.
 *
 * @module
 */

import { BSON } from "bson";

/** Bytes of a value stored inline in its head record. */
const INLINE_MAX = 60_000;
/** Bytes per chunk of a large value. */
const CHUNK = 60_000;
/** Chunks written per atomic operation. */
const CHUNKS_PER_OP = 8;
/** Parts of a key. */
const MAX_KEY_PARTS = 8;
/** Items of one list page. */
const MAX_LIST = 1000;

interface Head {
  size: number;
  value?: unknown;
  gen?: string;
  chunks?: number;
}

/** A storage request the module host cannot carry out. */
export class StorageError extends Error {
  /** `invalid_parameter` (bad key, op) or `limit_exceeded` (quota, size). */
  readonly code: "invalid_parameter" | "limit_exceeded";

  /** Create the error. */
  constructor(code: "invalid_parameter" | "limit_exceeded", message: string) {
    super(message);
    this.name = "StorageError";
    this.code = code;
  }
}

/** An entry as the module sees it. */
export interface Entry {
  /** Key without the namespace. */
  key: (string | number)[];
  /** The value. */
  value: unknown;
  /** Versionstamp of the head record. */
  versionstamp: string;
}

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

/** The storage of one module. */
export class ModuleStorage {
  readonly #kv: Deno.Kv;
  readonly #name: string;
  readonly #quota: number;

  /** Bind a storage to the module `name` with a quota in bytes. */
  constructor(kv: Deno.Kv, name: string, quota: number) {
    this.#kv = kv;
    this.#name = name;
    this.#quota = quota;
  }

  #head(key: (string | number)[]): Deno.KvKey {
    return ["mod", this.#name, "d", ...key];
  }

  /** Bytes in use. */
  async usage(): Promise<number> {
    const [added, freed] = await this.#kv.getMany<Deno.KvU64[]>([
      ["mod_usage", this.#name, "add"],
      ["mod_usage", this.#name, "sub"],
    ]);
    return Number((added.value?.value ?? 0n) - (freed.value?.value ?? 0n));
  }

  async #read(head: Head): Promise<unknown> {
    if (head.gen === undefined) return head.value;
    const keys = Array.from(
      { length: head.chunks ?? 0 },
      (_, i) => ["mod", this.#name, "c", head.gen!, i],
    );
    const parts: Uint8Array[] = [];
    for (let i = 0; i < keys.length; i += 10) {
      const batch = await this.#kv.getMany<Uint8Array[]>(keys.slice(i, i + 10));
      for (const entry of batch) {
        if (!entry.value) {
          throw new Error("a chunk of a stored value is missing");
        }
        parts.push(entry.value as Uint8Array);
      }
    }
    const bytes = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      bytes.set(p, at);
      at += p.length;
    }
    return BSON.deserialize(bytes, { promoteBuffers: true }).v;
  }

  /** Read one value. */
  async get(rawKey: unknown): Promise<Entry | null> {
    const key = checkKey(rawKey);
    const entry = await this.#kv.get<Head>(this.#head(key));
    if (!entry.value) return null;
    return {
      key,
      value: await this.#read(entry.value),
      versionstamp: entry.versionstamp!,
    };
  }

  #usageUpdate(op: Deno.AtomicOperation, delta: number): void {
    if (delta > 0) op.sum(["mod_usage", this.#name, "add"], BigInt(delta));
    if (delta < 0) op.sum(["mod_usage", this.#name, "sub"], BigInt(-delta));
  }

  async #ensureRoom(delta: number): Promise<void> {
    if (delta <= 0) return;
    const used = await this.usage();
    if (used + delta > this.#quota) {
      throw new StorageError(
        "limit_exceeded",
        `storage quota exceeded: ${used} of ${this.#quota} bytes used, ${delta} more asked`,
      );
    }
  }

  /** Write one value of any size. */
  async set(rawKey: unknown, value: unknown): Promise<void> {
    const key = checkKey(rawKey);
    const size = sizeOf(value);
    let head: Head = { size, value };
    let written: string | undefined;
    if (size > INLINE_MAX) {
      const bytes = BSON.serialize({ v: value });
      const gen = crypto.randomUUID();
      const chunks = Math.ceil(bytes.length / CHUNK);
      // Check the quota before writing any chunk.
      const old = await this.#kv.get<Head>(this.#head(key));
      await this.#ensureRoom(size - (old.value?.size ?? 0));
      for (let i = 0; i < chunks; i += CHUNKS_PER_OP) {
        const op = this.#kv.atomic();
        for (let j = i; j < Math.min(chunks, i + CHUNKS_PER_OP); j++) {
          op.set(
            ["mod", this.#name, "c", gen, j],
            bytes.slice(j * CHUNK, (j + 1) * CHUNK),
          );
        }
        await op.commit();
      }
      head = { size, gen, chunks };
      written = gen;
    }
    for (let attempt = 0; attempt < 20; attempt++) {
      const old = await this.#kv.get<Head>(this.#head(key));
      const delta = size - (old.value?.size ?? 0);
      try {
        await this.#ensureRoom(delta);
      } catch (error) {
        if (written) {
          await this.#deleteChunks({ size, gen: written, chunks: head.chunks });
        }
        throw error;
      }
      const op = this.#kv.atomic().check(old).set(this.#head(key), head);
      this.#usageUpdate(op, delta);
      if ((await op.commit()).ok) {
        if (old.value?.gen) await this.#deleteChunks(old.value);
        return;
      }
    }
    throw new Error("storage write kept conflicting");
  }

  async #deleteChunks(head: Head): Promise<void> {
    for (let i = 0; i < (head.chunks ?? 0); i += 50) {
      const op = this.#kv.atomic();
      for (let j = i; j < Math.min(head.chunks!, i + 50); j++) {
        op.delete(["mod", this.#name, "c", head.gen!, j]);
      }
      await op.commit();
    }
  }

  /** Delete one value. */
  async delete(rawKey: unknown): Promise<void> {
    const key = checkKey(rawKey);
    for (let attempt = 0; attempt < 20; attempt++) {
      const old = await this.#kv.get<Head>(this.#head(key));
      if (!old.value) return;
      const op = this.#kv.atomic().check(old).delete(this.#head(key));
      this.#usageUpdate(op, -old.value.size);
      if ((await op.commit()).ok) {
        if (old.value.gen) await this.#deleteChunks(old.value);
        return;
      }
    }
    throw new Error("storage delete kept conflicting");
  }

  /** List by prefix. */
  async list(
    rawPrefix: unknown,
    options: {
      limit?: unknown;
      cursor?: unknown;
      reverse?: unknown;
      start?: unknown;
    } = {},
  ): Promise<{ items: Entry[]; cursor?: string }> {
    const prefix = checkKey(rawPrefix, "prefix");
    const start = options.start === undefined || options.start === null
      ? undefined
      : checkKey(options.start, "start");
    const limit = typeof options.limit === "number"
      ? Math.max(1, Math.min(MAX_LIST, Math.floor(options.limit)))
      : 100;
    const selector: Deno.KvListSelector = start
      ? { prefix: this.#head(prefix), start: this.#head(start) }
      : { prefix: this.#head(prefix) };
    const iter = this.#kv.list<Head>(selector, {
      limit: limit + 1,
      cursor: typeof options.cursor === "string" && options.cursor
        ? options.cursor
        : undefined,
      reverse: options.reverse === true,
    });
    const items: Entry[] = [];
    let cursor: string | undefined;
    let more = false;
    for await (const entry of iter) {
      if (items.length === limit) {
        more = true; // the extra entry asked for exists
        break;
      }
      items.push({
        key: entry.key.slice(3) as (string | number)[],
        value: await this.#read(entry.value),
        versionstamp: entry.versionstamp,
      });
      cursor = iter.cursor;
    }
    return more ? { items, cursor } : { items };
  }

  /**
   * Apply checks, sets and deletes all or nothing (inline-sized values only).
   * Returns false when one of the module's checks failed.
   */
  async atomic(rawOps: unknown): Promise<boolean> {
    if (!Array.isArray(rawOps) || rawOps.length === 0 || rawOps.length > 100) {
      throw new StorageError(
        "invalid_parameter",
        "ops must be a list of 1 to 100 operations",
      );
    }
    const ops = rawOps.map((raw) => {
      const o = raw as {
        op?: unknown;
        key?: unknown;
        value?: unknown;
        versionstamp?: unknown;
      };
      if (o.op !== "set" && o.op !== "delete" && o.op !== "check") {
        throw new StorageError(
          "invalid_parameter",
          'op is "set", "delete" or "check"',
        );
      }
      const key = checkKey(o.key);
      const size = o.op === "set" ? sizeOf(o.value) : 0;
      if (size > INLINE_MAX) {
        throw new StorageError(
          "limit_exceeded",
          `values in an atomic operation are at most ${INLINE_MAX} bytes`,
        );
      }
      if (
        o.op === "check" && o.versionstamp !== null &&
        typeof o.versionstamp !== "string"
      ) {
        throw new StorageError(
          "invalid_parameter",
          "check needs a versionstamp (string or null)",
        );
      }
      return {
        op: o.op,
        key,
        value: o.value,
        size,
        versionstamp: o.versionstamp as string | null,
      };
    });
    for (let attempt = 0; attempt < 20; attempt++) {
      const writes = ops.filter((o) => o.op !== "check");
      const current = await this.#kv.getMany<Head[]>(
        writes.map((o) => this.#head(o.key)),
      );
      // The module's own checks, read first so that a failed one is told
      // apart from a conflict of the usage counter (which is retried).
      const checks = ops.filter((o) => o.op === "check");
      for (let i = 0; i < checks.length; i += 10) {
        const entries = await this.#kv.getMany<Head[]>(
          checks.slice(i, i + 10).map((o) => this.#head(o.key)),
        );
        if (
          entries.some((e, j) => e.versionstamp !== checks[i + j].versionstamp)
        ) return false;
      }
      let delta = 0;
      const op = this.#kv.atomic();
      for (const check of ops.filter((o) => o.op === "check")) {
        op.check({
          key: this.#head(check.key),
          versionstamp: check.versionstamp,
        });
      }
      // Writes are not checked one by one (a KV operation holds at most 100
      // checks): the module's own checks guard its logic, and the usage
      // delta may be off by a concurrent writer's change of the same key.
      writes.forEach((w, i) => {
        const old = current[i];
        delta += (w.op === "set" ? w.size : 0) -
          ((old.value as Head | null)?.size ?? 0);
        if (w.op === "set") {
          op.set(this.#head(w.key), { size: w.size, value: w.value });
        } else op.delete(this.#head(w.key));
      });
      await this.#ensureRoom(delta);
      this.#usageUpdate(op, delta);
      if ((await op.commit()).ok) {
        for (const old of current) {
          const head = old.value as Head | null;
          if (head?.gen) await this.#deleteChunks(head);
        }
        return true;
      }
    }
    throw new Error("atomic operation kept conflicting");
  }
}
