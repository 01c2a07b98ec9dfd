import assert from "node:assert/strict";
import { KvStorage } from "../../../workers/sdk/storage.ts";
import {
  addMessage,
  type Change,
  type CopyOutcome,
  INLINE_BODY,
  key,
  Mailbox,
  type MailboxState,
  type MessageRecord,
  type NewMessage,
  packRecord,
  readBody,
  releaseCopies,
  summaryOf,
  unpackRecord,
} from "./mailbox.ts";
import { localMessageId, parseGlobalId } from "./ids.ts";
import { indexSettled } from "./search_index.ts";

function record(id: string, owner: string): MessageRecord {
  return {
    id,
    message_id: id.replace(/-sent$/, ""),
    global_id: `${id.replace(/-sent$/, "")}@x.test`,
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
    thread: `${id.replace(/-sent$/, "")}@x.test`,
    seen: false,
    flagged: false,
    date: new Date(),
    size: 300,
    preview: "",
  };
}

/** A message `id` with a copy in each of `owners`' mailboxes. */
function message(
  id: string,
  owners: string[],
  options: { body?: string | Uint8Array; quota?: number } = {},
): NewMessage {
  return {
    id,
    body: options.body ?? `body of ${id}`,
    fresh: false,
    copies: owners.map((owner) => ({
      record: record(id, owner),
      quota: options.quota ?? 1e9,
    })),
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

/** Every key of the module's namespace with its versionstamp. */
async function snapshot(kv: Deno.Kv): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  for await (const entry of kv.list({ prefix: [] })) {
    out.set(JSON.stringify(entry.key), entry.versionstamp);
  }
  return out;
}

Deno.test("mailbox: concurrent deliveries share commits; every copy gets its own sequence number", () =>
  withStorages(async (a) => {
    const outcomes = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        addMessage(a, {
          id: `m${i}`,
          body: "b",
          fresh: false,
          copies: [
            { record: record(`m${i}`, "r@x.test"), quota: 1e9 },
            { record: record(`m${i}-sent`, `s${i % 3}@x.test`), quota: 1e9 },
          ],
        })),
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
      const [outcome] = await addMessage(
        storage,
        message(`m${i}`, ["r@x.test"]),
      );
      assert.equal((outcome as Change).seq, i + 1);
    }
    const state = (await a.get<MailboxState>(key.state("r@x.test")))!.value;
    assert.equal(state.seq, 20);
    assert.equal(state.counts.inbox.total, 20);
    // The same copy again (a retried delivery) is not added twice.
    const again = await addMessage(b, message("m3", ["r@x.test"]));
    assert.deepEqual(again, ["exists"]);
    // Past the quota.
    const full = await addMessage(a, {
      ...message("big", ["r@x.test"]),
      copies: [{
        record: { ...record("big", "r@x.test"), size: 10_000 },
        quota: 20 * 300 + 100,
      }],
    });
    assert.deepEqual(full, ["quota"]);
  }));

Deno.test("mailbox: a delivery that fails in a shared batch fails alone", () =>
  withStorages(async (a) => {
    const results = await Promise.allSettled(
      Array.from({ length: 10 }, (_, i) =>
        addMessage(
          a,
          message(`m${i}`, ["r@x.test"]),
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
    assert.equal(await a.get(key.content("m4")), null);
  }));

Deno.test("mailbox: a message's content is written once; another delivery of its id cannot change it", () =>
  withStorages(async (a, b) => {
    await addMessage(a, message("m", ["r@x.test"], { body: "the original" }));
    // The same id again, from the other module copy too, with other bodies
    // and a new recipient: the new copy shares the first content.
    const outcomes = await addMessage(
      b,
      message("m", ["r@x.test", "t@x.test"], { body: "a rewrite" }),
    );
    assert.equal(outcomes[0], "exists");
    assert.equal((outcomes[1] as Change).type, "new");
    await addMessage(a, message("m", ["t@x.test"], { body: "again" }));
    assert.equal(await readBody(a, "m"), "the original");
    assert.deepEqual((await a.get(key.owners("m")))!.value, [
      "r@x.test",
      "t@x.test",
    ]);
  }));

Deno.test("mailbox: concurrent deliveries of one message share its content and owners list without losing an entry", () =>
  withStorages(async (a) => {
    const outcomes = await Promise.all(
      ["r@x.test", "s@x.test", "t@x.test", "r@x.test"].map((owner, i) =>
        addMessage(a, message("m", [owner], { body: `body ${i}` }))
      ),
    );
    assert.deepEqual(
      outcomes.map((o) => typeof o[0] === "object" ? "new" : o[0]),
      ["new", "new", "new", "exists"],
    );
    assert.equal(await readBody(a, "m"), "body 0");
    assert.deepEqual(
      (await a.get<string[]>(key.owners("m")))!.value.sort(),
      ["r@x.test", "s@x.test", "t@x.test"],
    );
  }));

Deno.test("mailbox: a delivery that adds no copy commits nothing", () =>
  withStorages(async (a, _b, kv) => {
    await addMessage(a, message("m", ["r@x.test"]));
    await indexSettled(a);
    const before = await snapshot(kv);
    // A retry (the copy exists), a full mailbox, and no mailbox at all.
    assert.deepEqual(
      await addMessage(a, message("m", ["r@x.test"], { body: "other" })),
      ["exists"],
    );
    const full: CopyOutcome[] = await addMessage(
      a,
      message("n", ["r@x.test"], { quota: 10 }),
    );
    assert.deepEqual(full, ["quota"]);
    assert.deepEqual(await addMessage(a, message("o", [])), []);
    assert.deepEqual(await snapshot(kv), before);
  }));

Deno.test("mailbox: a large body is stored apart once, never replaced, removed when unused and with the last copy", () =>
  withStorages(async (a, _b, kv) => {
    const big = (fill: number) => new Uint8Array(INLINE_BODY + 1000).fill(fill);
    const bodies = async () => {
      let n = 0;
      for await (
        const _ of kv.list({ prefix: ["mod", "messages", "d", "body"] })
      ) n++;
      return n;
    };
    await addMessage(a, message("m", ["r@x.test"], { body: big(1) }));
    await addMessage(
      a,
      message("m", ["r@x.test", "t@x.test"], {
        body: big(2),
      }),
    );
    assert.deepEqual(await readBody(a, "m"), big(1));
    assert.equal(await bodies(), 1);
    // A full mailbox: nothing stays behind.
    await addMessage(a, message("n", ["r@x.test"], { body: big(3), quota: 1 }));
    assert.equal(await readBody(a, "n"), null);
    assert.equal(await bodies(), 1);
    // The last copy takes the content and the body along.
    await releaseCopies(a, [record("m", "r@x.test")]);
    assert.deepEqual(await readBody(a, "m"), big(1));
    await releaseCopies(a, [record("m", "t@x.test")]);
    assert.equal(await readBody(a, "m"), null);
    assert.equal(await a.get(key.owners("m")), null);
    assert.equal(await bodies(), 0);
  }));

Deno.test("mailbox: a thread named by a long global id (a long origin domain) holds its copies", () =>
  withStorages(async (a) => {
    const domain = `${"d".repeat(60)}.${"e".repeat(60)}.${"f".repeat(60)}.${
      "g".repeat(60)
    }.test`;
    const root = `${"r".repeat(100)}@${domain}`;
    // Received from that domain: its local id is the hash of its global id.
    const id = localMessageId(parseGlobalId(root)!, false);
    const first = message(id, ["r@x.test"]);
    first.copies[0].record = {
      ...first.copies[0].record,
      global_id: root,
      thread: root,
    };
    const answer = message("answer", ["r@x.test"]);
    answer.copies[0].record.thread = root;
    await addMessage(a, first);
    await addMessage(a, answer);
    const thread = await new Mailbox(a, "r@x.test").thread(root);
    assert.deepEqual(thread.map((m) => m.id).sort(), [id, "answer"].sort());
  }));

Deno.test("mailbox: copies stored before 2026-11-28 (the whole record, the summary in the folder index, the change with its seq) are listed, read, threaded, caught up, changed and deleted beside new ones", async () => {
  const dir = await Deno.makeTempDir();
  const kv = await Deno.openKv(`${dir}/kv`);
  try {
    const storage = new KvStorage(kv, "messages", 1e9);
    const owner = "r@x.test";
    // The old layout, as that version wrote it.
    const old: MessageRecord = {
      ...record("old1", owner),
      date: new Date("2026-01-01T00:00:00Z"),
      cc: ["c@x.test"],
      flagged: true,
      global_id: "old1@elsewhere.test",
      thread: "old1@elsewhere.test",
    };
    const reply: MessageRecord = {
      ...record("old2", owner),
      date: new Date("2026-01-02T00:00:00Z"),
      in_reply_to: "old1",
      thread: "old1@elsewhere.test",
    };
    const state: MailboxState = {
      seq: 2,
      used: 600,
      counts: { inbox: { total: 2, unseen: 2 } },
      folders: [],
    };
    const oldSummary = summaryOf(old);
    for (const [seq, r] of [[1, old], [2, reply]] as const) {
      await storage.set(key.msg(owner, r.id), r);
      await storage.set(key.idx(owner, r.folder, r.date, r.id), summaryOf(r));
      await storage.set(key.chg(owner, seq), {
        seq,
        type: "new",
        id: r.id,
        folder: r.folder,
      });
      await storage.set(key.content(r.message_id), { body: `body ${r.id}` });
      await storage.set(key.owners(r.message_id), [owner]);
    }
    await storage.set(key.thr(owner, reply.thread, reply.date, reply.id), true);
    await storage.set(key.state(owner), state);
    // A new copy beside them, in the new layout.
    await addMessage(storage, message("new1", [owner]));
    const mailbox = new Mailbox(storage, owner);
    const newer = (await mailbox.message("new1"))!.value;
    assert.deepEqual(newer, { ...record("new1", owner), date: newer.date });
    // The new copy's stored form leaves out what its key and fields give.
    const stored = (await storage.get<Record<string, unknown>>(
      key.msg(owner, "new1"),
    ))!.value;
    assert.equal(stored.id, undefined);
    assert.equal(stored.owner, undefined);
    // Its index entry: the summary, stored the same way.
    assert.deepEqual(
      (await storage.get(key.idx(owner, "inbox", newer.date, "new1")))!.value,
      { fr: "a@x.test", s: "new1", z: 300, p: "" },
    );

    const list = await mailbox.list("inbox", { limit: 10 });
    assert.deepEqual(list.messages, [
      summaryOf(newer),
      summaryOf(reply),
      oldSummary,
    ]);
    // Two at a time: the cursor goes on from the old entries.
    const first = await mailbox.list("inbox", { limit: 2 });
    assert.deepEqual(first.messages.map((m) => m.id), ["new1", "old2"]);
    const rest = await mailbox.list("inbox", {
      limit: 2,
      cursor: first.cursor,
    });
    assert.deepEqual(rest.messages.map((m) => m.id), ["old1"]);
    assert.deepEqual((await mailbox.message("old1"))!.value, old);
    assert.deepEqual(await mailbox.copyOf("old2"), reply);
    assert.deepEqual(
      (await mailbox.thread("old1@elsewhere.test")).map((m) => m.id),
      ["old1", "old2"],
    );
    const caught = await mailbox.changes(0, 10);
    assert.deepEqual(
      caught.changes.map((c) => [c.seq, c.type, c.id, c.folder, c.summary]),
      [
        [1, "new", "old1", "inbox", oldSummary],
        [2, "new", "old2", "inbox", summaryOf(reply)],
        [3, "new", "new1", "inbox", summaryOf(newer)],
      ],
    );
    // Changed: written in the new layout, read the same.
    await mailbox.update(["old1"], { seen: true });
    const seen = { ...old, seen: true };
    assert.deepEqual((await mailbox.message("old1"))!.value, seen);
    assert.deepEqual(
      (await mailbox.list("inbox", { limit: 10, unseen: true })).messages.map(
        (m) => m.id,
      ),
      ["new1", "old2"],
    );
    assert.deepEqual(
      (await mailbox.list("inbox", { limit: 10 })).messages.at(-1),
      summaryOf(seen),
    );
    await mailbox.update(["old2"], { remove: true });
    assert.equal(await mailbox.message("old2"), null);
    assert.deepEqual(
      (await mailbox.list("inbox", { limit: 10 })).messages.map((m) => m.id),
      ["new1", "old1"],
    );
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("mailbox: a copy's stored form leaves out what its key, its other fields and the defaults give, and reads back the same", () => {
  const base = record("m1", "r@x.test");
  const cases: MessageRecord[] = [
    base,
    // The sender's copy: from its owner, in Sent, with Bcc.
    {
      ...record("m1-sent", "a@x.test"),
      from: "a@x.test",
      to: ["r@x.test", "s@y.test"],
      bcc: ["hidden@z.test"],
      folder: "sent",
      seen: true,
    },
    // A Bcc recipient's copy, a reply in another server's thread.
    {
      ...base,
      id: "m1-0123456789abcdef",
      message_id: "m1-0123456789abcdef",
      global_id: "m1-0123456789abcdef@y.test",
      thread: "first@y.test",
      in_reply_to: "first",
      to: ["someone@y.test"],
      cc: ["r@x.test"],
      format: "markdown",
      encrypted: true,
      flagged: true,
      attachments: [{
        id: "b1",
        name: "a.pdf",
        type: "application/pdf",
        size: 10,
        sha256: "00",
      }],
      forwarded: ["f@x.test"],
      auto_submitted: "auto-replied",
    },
    // A message whose fields happen to look derived but are not.
    { ...base, to: ["R@x.test"], from: "r@x.test", global_id: "m1@X.test" },
  ];
  for (const r of cases) {
    const stored = packRecord(r);
    assert.equal(stored.id, undefined);
    assert.deepEqual(unpackRecord(r.owner, r.id, stored), r);
    assert.ok(JSON.stringify(stored).length < JSON.stringify(r).length);
  }
  // A received copy at its defaults keeps little beyond its content.
  assert.deepEqual(Object.keys(packRecord(base)).sort(), [
    "d",
    "f",
    "fr",
    "p",
    "s",
    "z",
  ]);
  // A whole record (the layout before 2026-11-28) is read as it is.
  assert.deepEqual(unpackRecord("r@x.test", "m1", { ...base }), base);
});

Deno.test("mailbox: the list shows each copy's summary from its folder index entry alone, attachments and email included", async () => {
  const dir = await Deno.makeTempDir();
  const kv = await Deno.openKv(`${dir}/kv`);
  try {
    const storage = new KvStorage(kv, "messages", 1e9);
    const owner = "r@x.test";
    const ref = { id: "b1", name: "a.pdf", type: "x/y", size: 1, sha256: "0" };
    const rich: MessageRecord = {
      ...record("m1", owner),
      from: "f@y.test",
      global_id: "m1@y.test",
      thread: "t@y.test",
      seen: true,
      flagged: true,
      encrypted: true,
      preview: "hello",
      attachments: [ref, { ...ref, id: "b2" }],
      email: {
        message_id: "m1@y.test",
        from_name: "F",
        source: ref,
        references: [],
      },
    };
    await addMessage(storage, {
      id: "m1",
      body: "b",
      fresh: false,
      copies: [{ record: rich, quota: 1e9 }],
    });
    await addMessage(storage, message("m2", [owner]));
    const mailbox = new Mailbox(storage, owner);
    const m2 = (await mailbox.message("m2"))!.value;
    // The copies themselves are not read: gone, the list still shows them.
    await kv.delete(["mod", "messages", "d", ...key.msg(owner, "m1")]);
    await kv.delete(["mod", "messages", "d", ...key.msg(owner, "m2")]);
    assert.deepEqual((await mailbox.list("inbox", { limit: 10 })).messages, [
      summaryOf(m2),
      summaryOf(rich),
    ]);
    assert.deepEqual(summaryOf(rich).email, { from_name: "F", dmarc: "none" });
    assert.equal(summaryOf(rich).attachments, 2);
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});
