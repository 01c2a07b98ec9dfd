import assert from "node:assert/strict";
import { moveModuleData } from "../kv/modules.ts";
import { KvStorage } from "./sdk/storage.ts";

Deno.test("module data: a module's data moves from the core database into its own, once", async () => {
  const dir = await Deno.makeTempDir({ prefix: "amtp-store-" });
  try {
    const core = await Deno.openKv(`${dir}/core.kv`);
    // Written the way servers before per-module databases wrote it.
    const old = new KvStorage(core, "messages", 10_000_000);
    await old.set(["state", "a@x.test"], { seq: 3 });
    await old.set(["big"], new Uint8Array(150_000).fill(7));
    await new KvStorage(core, "other", 1000).set(["k"], 1);
    const usage = await old.usage();
    const path = `${dir}/messages.kv`;
    const moved = await moveModuleData(core, "messages", path);
    assert.ok(moved >= 5, String(moved)); // head, chunk heads, chunks, usage
    assert.equal(await moveModuleData(core, "messages", path), 0);
    const left = [];
    for await (const e of core.list({ prefix: ["mod", "messages"] })) {
      left.push(e.key);
    }
    assert.deepEqual(left, []);
    assert.equal(
      (await core.get(["mod", "other", "d", "k"])).value !== null,
      true,
    );
    const own = await Deno.openKv(path);
    const moduleStore = new KvStorage(own, "messages", 10_000_000);
    assert.deepEqual((await moduleStore.get(["state", "a@x.test"]))!.value, {
      seq: 3,
    });
    const big = (await moduleStore.get<Uint8Array>(["big"]))!.value;
    assert.equal(big.length, 150_000);
    assert.equal(big[149_999], 7);
    assert.equal(await moduleStore.usage(), usage);
    own.close();
    core.close();
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
