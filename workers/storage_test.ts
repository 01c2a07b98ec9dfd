import assert from "node:assert/strict";
import { ModuleStorage, StorageError } from "./storage.ts";

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
      () => s.atomic([{ op: "bogus", key: ["a"] }]),
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
    await assert.rejects(() => s.get("not a list"), StorageError);
    await assert.rejects(() => s.get([{}]), StorageError);
  }));
