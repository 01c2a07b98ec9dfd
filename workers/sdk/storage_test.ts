import assert from "node:assert/strict";
import { KvStorage as ModuleStorage, StorageError } from "./storage.ts";
import { BSON } from "bson";

async function withKv(fn: (kv: Deno.Kv) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "amtp-storage-" });
  const kv = await Deno.openKv(`${dir}/kv`);
  try {
    await fn(kv);
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("storage: list pages by prefix in key order", () =>
  withKv(async (kv) => {
    const s = new ModuleStorage(kv, "m", 1_000_000);
    for (let i = 0; i < 25; i++) await s.set(["items", i], { n: i });
    await s.set(["other", 1], "x");
    const seen: number[] = [];
    let cursor: string | undefined;
    do {
      const page = await s.list(["items"], { limit: 10, cursor });
      seen.push(...page.items.map((e) => (e.value as { n: number }).n));
      cursor = page.cursor;
    } while (cursor);
    assert.deepEqual(seen, Array.from({ length: 25 }, (_, i) => i));
    const last = await s.list(["items"], { limit: 3, reverse: true });
    assert.deepEqual(last.items.map((e) => e.key), [["items", 24], [
      "items",
      23,
    ], ["items", 22]]);
  }));

Deno.test("storage: atomic checks, sets and deletes all or nothing", () =>
  withKv(async (kv) => {
    const s = new ModuleStorage(kv, "m", 1_000_000);
    assert.equal(
      await s.atomic([{ op: "check", key: ["a"], versionstamp: null }, {
        op: "set",
        key: ["a"],
        value: 1,
      }]),
      true,
    );
    const a = await s.get(["a"]);
    assert.equal(a?.value, 1);
    // A stale check fails and writes nothing.
    await s.set(["a"], 2);
    assert.equal(
      await s.atomic([{
        op: "check",
        key: ["a"],
        versionstamp: a!.versionstamp,
      }, { op: "set", key: ["b"], value: 1 }]),
      false,
    );
    assert.equal(await s.get(["b"]), null);
    assert.equal(
      await s.atomic([{ op: "delete", key: ["a"] }, {
        op: "set",
        key: ["b"],
        value: "x",
      }]),
      true,
    );
    assert.equal(await s.get(["a"]), null);
    await assert.rejects(
      () => s.atomic([{ op: "bogus", key: ["a"] }] as never),
      StorageError,
    );
    await assert.rejects(
      () => s.atomic([{ op: "check", key: ["a"], versionstamp: "00" }]),
      StorageError,
    );
    await assert.rejects(
      () => s.atomic([{ op: "set", key: ["big"], value: "x".repeat(70_000) }]),
      StorageError,
    );
  }));

Deno.test("storage: usage follows writes and deletes; the quota refuses", () =>
  withKv(async (kv) => {
    const s = new ModuleStorage(kv, "m", 200_000);
    await s.set(["v"], new Uint8Array(150_000));
    const used = await s.usage();
    assert.ok(used >= 150_000 && used < 151_000, String(used));
    await assert.rejects(
      () => s.set(["w"], new Uint8Array(100_000)),
      (e: unknown) => e instanceof StorageError && e.code === "limit_exceeded",
    );
    await s.delete(["v"]);
    assert.equal(await s.usage(), 0);
    // The chunks of the deleted value are gone too.
    const left = [];
    for await (const e of kv.list({ prefix: ["mod", "m", "c"] })) {
      left.push(e.key);
    }
    assert.deepEqual(left, []);
    await assert.rejects(() => s.get("not a list" as never), StorageError);
    await assert.rejects(() => s.get([{}] as never), StorageError);
  }));

Deno.test("storage: concurrent atomics commit in groups, each with its own checks", () =>
  withKv(async (kv) => {
    const s = new ModuleStorage(kv, "m", 10_000_000);
    // 200 writers on disjoint keys, started together: all land.
    const results = await Promise.all(
      Array.from({ length: 200 }, (_, i) =>
        s.atomic([
          { op: "check", key: ["n", i], versionstamp: null },
          { op: "set", key: ["n", i], value: { i } },
        ])),
    );
    assert.ok(results.every((ok) => ok));
    const page = await s.list(["n"], { limit: 1000 });
    assert.equal(page.items.length, 200);
    // Fewer KV commits than operations: the versionstamps are shared.
    const stamps = new Set(page.items.map((e) => e.versionstamp));
    assert.ok(stamps.size < 200, `${stamps.size} commits for 200 writes`);
    // 20 writers racing on one key with the same expectation: exactly one wins.
    const seen = (await s.get(["n", 0]))!.versionstamp;
    const race = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        s.atomic([
          { op: "check", key: ["n", 0], versionstamp: seen },
          { op: "set", key: ["n", 0], value: { winner: i } },
        ])),
    );
    assert.equal(race.filter((ok) => ok).length, 1);
    const winner = race.indexOf(true);
    assert.deepEqual((await s.get(["n", 0]))!.value, { winner });
    // A check that fails in a group leaves the others of the group intact.
    const mixed = await Promise.all([
      s.atomic([{
        op: "check",
        key: ["n", 1],
        versionstamp: "00000000000000000001",
      }, {
        op: "set",
        key: ["x", 1],
        value: 1,
      }]),
      s.atomic([{ op: "set", key: ["x", 2], value: 2 }]),
      s.atomic([{ op: "set", key: ["x", 3], value: 3 }]),
    ]);
    assert.deepEqual(mixed, [false, true, true]);
    assert.equal(await s.get(["x", 1]), null);
  }));

Deno.test("storage: a group that would pass the quota is refused only for the one that does not fit", () =>
  withKv(async (kv) => {
    const s = new ModuleStorage(kv, "m", 100_000);
    const outcomes = await Promise.allSettled(
      Array.from(
        { length: 5 },
        (_, i) =>
          s.atomic([{ op: "set", key: ["q", i], value: "x".repeat(30_000) }]),
      ),
    );
    const ok = outcomes.filter((o) => o.status === "fulfilled").length;
    const refused = outcomes.filter((o) =>
      o.status === "rejected" && o.reason instanceof StorageError &&
      o.reason.code === "limit_exceeded"
    ).length;
    assert.equal(ok, 3);
    assert.equal(refused, 2);
    assert.ok(await s.usage() <= 100_000);
  }));

/** A split value's head as stored. */
interface Head {
  size: number;
  gen?: string;
  chunks?: number;
  value?: unknown;
  first?: Uint8Array;
}

/** Raw records under a module's namespace of a kind: `d` heads or `c` chunks. */
async function raw(
  kv: Deno.Kv,
  kind: "d" | "c",
): Promise<Deno.KvEntry<unknown>[]> {
  return await Array.fromAsync(kv.list({ prefix: ["mod", "m", kind] }));
}

Deno.test("storage: a value that would spill out of SQLite's page is written as small chunks with its head, and freed with it", () =>
  withKv(async (kv) => {
    const s = new ModuleStorage(kv, "m", 10_000_000);
    const body = "b".repeat(1500);
    // In an atomic operation, and by `set`.
    assert.equal(
      await s.atomic([{ op: "set", key: ["content", "x"], value: { body } }]),
      true,
    );
    await s.set(["content", "y"], { body, n: 2 });
    await s.set(["small"], { body: "s" });
    const heads = await raw(kv, "d");
    const headOf = (id: string) =>
      heads.find((e) => e.key.at(-1) === id)!.value as Head;
    for (const id of ["x", "y"]) {
      const head = headOf(id);
      assert.equal(head.value, undefined, "not inline");
      // The head keeps the first of two pieces, a chunk the other.
      assert.equal(head.chunks, 1);
      // Stored alone, not with a buffer it was a view of.
      assert.ok(head.first!.buffer.byteLength <= 800);
    }
    // A small value's head is `[size, value]`.
    assert.deepEqual(headOf("small"), [
      BSON.calculateObjectSize({ v: { body: "s" } }),
      { body: "s" },
    ]);
    const chunks = await raw(kv, "c");
    assert.equal(chunks.length, 2);
    // Each record stays within the page (key and value well under 1,000 bytes).
    for (const e of chunks) {
      assert.ok((e.value as Uint8Array).byteLength <= 800);
    }
    assert.deepEqual((await s.get(["content", "x"]))?.value, { body });
    assert.deepEqual(
      (await s.getMany([["content", "y"], ["content", "x"]])).map((e) =>
        e?.value
      ),
      [{ body, n: 2 }, { body }],
    );
    assert.deepEqual(
      (await s.list(["content"])).items.map((e) => e.value),
      [{ body }, { body, n: 2 }],
    );
    // Replaced by a small value, then deleted: its chunks go with it.
    await s.set(["content", "x"], "short");
    assert.equal((await s.get(["content", "x"]))?.value, "short");
    await s.delete(["content", "y"]);
    assert.equal((await raw(kv, "c")).length, 0);
    assert.equal(
      await s.usage(),
      (await raw(kv, "d")).reduce(
        (n, e) =>
          n + (Array.isArray(e.value) ? e.value[0] : (e.value as Head).size),
        0,
      ),
    );
  }));

Deno.test("storage: heads written before 2026-11-28 (an object holding a small value; a split value's pieces all in chunks) are read, listed, replaced and freed", () =>
  withKv(async (kv) => {
    const s = new ModuleStorage(kv, "m", 10_000_000);
    const value = { body: "o".repeat(1500) };
    const bytes = BSON.serialize({ v: value });
    const half = Math.ceil(bytes.length / 2);
    const size = BSON.calculateObjectSize({ v: value });
    const small = { n: 1 };
    const smallSize = BSON.calculateObjectSize({ v: small });
    await kv.atomic()
      .set(["mod", "m", "d", "a"], { size: smallSize, value: small })
      .sum(["mod_usage", "m", "add"], BigInt(smallSize))
      .commit();
    assert.deepEqual((await s.get(["a"]))?.value, small);
    await kv.atomic()
      .set(["mod", "m", "d", "old"], { size, gen: "g0", chunks: 2 })
      .set(["mod", "m", "c", "g0", 0], bytes.slice(0, half))
      .set(["mod", "m", "c", "g0", 1], bytes.slice(half))
      .sum(["mod_usage", "m", "add"], BigInt(size))
      .commit();
    assert.deepEqual((await s.get(["old"]))?.value, value);
    assert.deepEqual((await s.list([])).items.map((e) => e.value), [
      small,
      value,
    ]);
    assert.deepEqual(
      (await s.getMany([["old"], ["a"]])).map((e) => e?.value),
      [value, small],
    );
    await s.delete(["a"]);
    await s.set(["old"], { body: "p".repeat(1500) });
    assert.deepEqual((await s.get(["old"]))?.value, { body: "p".repeat(1500) });
    assert.equal(
      (await raw(kv, "c")).filter((e) => e.key[3] === "g0").length,
      0,
    );
    await s.delete(["old"]);
    assert.equal((await raw(kv, "c")).length, 0);
    assert.equal(await s.usage(), 0);
  }));
