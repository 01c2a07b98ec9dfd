import assert from "node:assert/strict";
import { KvStorage } from "../../../workers/sdk/storage.ts";
import {
  addCopies,
  type Change,
  key,
  type MailboxState,
  type MessageRecord,
} from "./mailbox.ts";

function record(id: string, owner: string): MessageRecord {
  return {
    id,
    message_id: id,
    owner,
    folder: "inbox",
    from: "a@x.test",
    to: [owner],
    cc: [],
    bcc: [],
    subject: id,
    format: "text",
    encrypted: false,
    attachments: [],
    in_reply_to: null,
    thread: id,
    seen: false,
    flagged: false,
    date: new Date(),
    size: 300,
    preview: "",
  };
}

async function withStorages(
  fn: (a: KvStorage, b: KvStorage, kv: Deno.Kv) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "amtp-mailbox-" });
  const kvA = await Deno.openKv(`${dir}/m.kv`);
  const kvB = await Deno.openKv(`${dir}/m.kv`);
  try {
    // Two copies of the module (two versions side by side) on one database.
    await fn(
      new KvStorage(kvA, "messages", 1e12),
      new KvStorage(kvB, "messages", 1e12),
      kvA,
    );
  } finally {
    kvA.close();
    kvB.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("mailbox: concurrent deliveries share commits; every copy gets its own sequence number", () =>
  withStorages(async (a) => {
    const outcomes = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        addCopies(a, [
          { record: record(`m${i}`, "r@x.test"), quota: 1e9 },
          { record: record(`m${i}-sent`, `s${i % 3}@x.test`), quota: 1e9 },
        ])),
    );
    const seqs = outcomes.map((o) => (o[0] as Change).seq).sort((x, y) =>
      x - y
    );
    assert.deepEqual(seqs, Array.from({ length: 60 }, (_, i) => i + 1));
    const state = (await a.get<MailboxState>(key.state("r@x.test")))!.value;
    assert.equal(state.seq, 60);
    assert.equal(state.counts.inbox.total, 60);
    assert.equal(state.used, 60 * 300);
    const stamps = new Set(
      (await a.getMany(
        Array.from({ length: 60 }, (_, i) => key.msg("r@x.test", `m${i}`)),
      )).map((e) => e!.versionstamp),
    );
    assert.ok(stamps.size < 60, `${stamps.size} commits for 60 deliveries`);
  }));

Deno.test("mailbox: two module copies on one database lose no change (a stale cached state is read again)", () =>
  withStorages(async (a, b) => {
    for (let i = 0; i < 20; i++) {
      const storage = i % 2 === 0 ? a : b;
      const [outcome] = await addCopies(storage, [{
        record: record(`m${i}`, "r@x.test"),
        quota: 1e9,
      }]);
      assert.equal((outcome as Change).seq, i + 1);
    }
    const state = (await a.get<MailboxState>(key.state("r@x.test")))!.value;
    assert.equal(state.seq, 20);
    assert.equal(state.counts.inbox.total, 20);
    // The same copy again (a retried delivery) is not added twice.
    const again = await addCopies(b, [{
      record: record("m3", "r@x.test"),
      quota: 1e9,
    }]);
    assert.deepEqual(again, ["exists"]);
    // Past the quota.
    const full = await addCopies(a, [{
      record: { ...record("big", "r@x.test"), size: 10_000 },
      quota: 20 * 300 + 100,
    }]);
    assert.deepEqual(full, ["quota"]);
  }));

Deno.test("mailbox: a delivery that fails in a shared batch fails alone", () =>
  withStorages(async (a) => {
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        addCopies(
          a,
          [{ record: record(`m${i}`, "r@x.test"), quota: 1e9 }],
          i === 4
            ? { last: () => Promise.reject(new Error("its own fault")) }
            : {},
        )),
    );
    assert.equal(results[4].status, "rejected");
    assert.equal(results.filter((r) => r.status === "fulfilled").length, 9);
    const state = (await a.get<MailboxState>(key.state("r@x.test")))!.value;
    assert.equal(state.counts.inbox.total, 9);
    assert.equal(await a.get(key.msg("r@x.test", "m4")), null);
  }));
