import assert from "node:assert/strict";
import { KvGroupCommit } from "./group_commit.ts";

Deno.test("group commit: concurrent writes share commits, each keeps its own checks", async () => {
  const dir = await Deno.makeTempDir({ prefix: "amtp-group-" });
  const kv = await Deno.openKv(`${dir}/kv`);
  try {
    const group = new KvGroupCommit(kv);
    await kv.set(["taken"], 1);
    const results = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        group.write(
          // Write 50 claims a key that exists: only it fails.
          [{ key: i === 50 ? ["taken"] : ["k", i], versionstamp: null }],
          {
            mutations: 1,
            mutate: (op) => op.set(["k", i], i),
          },
        )),
    );
    assert.equal(results.filter((ok) => !ok).length, 1);
    assert.equal(results[50], false);
    assert.equal((await kv.get(["k", 50])).value, null);
    const stored = await Array.fromAsync(kv.list({ prefix: ["k"] }));
    assert.equal(stored.length, 99);
    const stamps = new Set(stored.map((e) => e.versionstamp));
    assert.ok(stamps.size < 99, `${stamps.size} commits for 99 writes`);
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});
