import assert from "node:assert/strict";
import { enqueueOutbound } from "../core/federation/outbox.ts";
import { KvGroupCommit } from "./group_commit.ts";
import { OutboundStore } from "./outbound.ts";

/**
 * A KV whose next `getMany` first runs `between`: what another instance
 * writes after this one listed the due index and before it read the items.
 */
function interleaved(kv: Deno.Kv) {
  const hook: { between?: () => Promise<void> } = {};
  const proxy = new Proxy(kv, {
    get(target, property) {
      if (property === "getMany") {
        return async (...args: Parameters<Deno.Kv["getMany"]>) => {
          const between = hook.between;
          hook.between = undefined;
          await between?.();
          return target.getMany(...args);
        };
      }
      const value = Reflect.get(target, property);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { kv: proxy, hook };
}

Deno.test("outbound: an item another instance leases between the due index's read and the item's read is not due, so it is not taken twice", async () => {
  const kv = await Deno.openKv(":memory:");
  try {
    const now = 1_000_000;
    const first = new OutboundStore(kv, new KvGroupCommit(kv));
    const raced = interleaved(kv);
    const second = new OutboundStore(raced.kv, new KvGroupCommit(raced.kv));
    const [id] = await enqueueOutbound(first, {
      module: "messages",
      from: "alice@here.test",
      to: ["bob@there.test"],
      id: "d1",
      payload: {},
    }, now);

    raced.hook.between = async () => {
      const taken = await first.lease(
        await first.due(now),
        "first",
        now + 30_000,
      );
      assert.deepEqual(taken.map((e) => e.value.id), [id]);
    };
    const due = await second.due(now);
    assert.equal(raced.hook.between, undefined, "the interleaving ran");
    assert.deepEqual(due, []);
    assert.deepEqual(await second.lease(due, "second", now + 30_000), []);
    assert.equal((await first.get(id))?.value.lease?.holder, "first");

    // Once the lease has expired, the other instance takes it over.
    const later = await second.due(now + 30_000);
    assert.deepEqual(later.map((e) => e.value.id), [id]);
    const taken = await second.lease(later, "second", now + 60_000);
    assert.equal(taken[0]?.value.lease?.holder, "second");
  } finally {
    kv.close();
  }
});
