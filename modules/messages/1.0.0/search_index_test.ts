import assert from "node:assert/strict";
import { KvStorage } from "../../../workers/sdk/storage.ts";
import { addMessage, Mailbox, type MessageRecord } from "./mailbox.ts";
import { BLOCK_MAX } from "./search_index.ts";
import {
  decodeBlock,
  encodeBlock,
  FIELD,
  indexerOf,
  indexSettled,
  type QueryWord,
  searchIndex,
  words,
} from "./search_index.ts";

const OWNER = "bob@x.test";

function copy(
  id: string,
  date: number,
  fields: Partial<MessageRecord> = {},
): MessageRecord {
  return {
    id,
    message_id: id,
    global_id: `${id}@x.test`,
    owner: OWNER,
    folder: "inbox",
    from: "alice@x.test",
    to: [OWNER],
    cc: [],
    bcc: [],
    subject: "",
    format: "text",
    encrypted: false,
    attachments: [],
    in_reply_to: null,
    thread: `${id}@x.test`,
    seen: false,
    flagged: false,
    date: new Date(date),
    size: 300,
    preview: "",
    ...fields,
  };
}

async function withStorage(
  fn: (storage: KvStorage, kv: Deno.Kv) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "amtp-search-" });
  const kv = await Deno.openKv(`${dir}/m.kv`);
  try {
    await fn(new KvStorage(kv, "messages", 1e12), kv);
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
}

function add(
  storage: KvStorage,
  record: MessageRecord,
  body: string | Uint8Array,
) {
  return addMessage(storage, {
    id: record.message_id,
    body,
    fresh: false,
    copies: [{ record, quota: 1e12 }],
  });
}

const q = (text: string, fields = 15): QueryWord[] =>
  words(text).map((t) => ({ text: t, fields }));

async function ids(
  storage: KvStorage,
  query: QueryWord[],
  options: { folder?: string; limit?: number; cursor?: string } = {},
) {
  const found = await searchIndex(storage, OWNER, {
    words: query,
    limit: options.limit ?? 50,
    ...options,
  });
  return { ids: found.messages.map((m) => m.id), cursor: found.cursor };
}

Deno.test("search index: words of subject, sender, attachment names and body; ranked, newest first among equals; prefixes", () =>
  withStorage(async (storage) => {
    await add(
      storage,
      copy("a", 1000, { subject: "Ridge walk on Friday" }),
      "We meet at the bridge.",
    );
    await add(
      storage,
      copy("b", 2000, { subject: "Invoice" }),
      "The ridge path is closed. Café opens at nine.",
    );
    await add(
      storage,
      copy("c", 3000, {
        subject: "Photos",
        from: "ridgeway@y.test",
        attachments: [{
          id: "x",
          name: "summit-ridge.jpg",
          type: "image/jpeg",
          size: 1,
          sha256: "0",
        }],
      }),
      "nothing here",
    );
    await add(
      storage,
      copy("d", 4000, { subject: "Secret", encrypted: true }),
      new TextEncoder().encode("ridge ridge ridge"),
    );
    // Subject beats sender beats attachment name beats body; "ridge"
    // matches "ridgeway" as a prefix; the encrypted body is not indexed.
    assert.deepEqual((await ids(storage, q("ridge"))).ids, ["a", "c", "b"]);
    assert.deepEqual((await ids(storage, q("CAFE"))).ids, ["b"]);
    assert.deepEqual((await ids(storage, q("ridge closed"))).ids, ["b"]);
    assert.deepEqual((await ids(storage, q("secret"))).ids, ["d"]);
    assert.deepEqual(
      (await ids(storage, q("ridge", FIELD.from))).ids,
      ["c"],
    );
    assert.deepEqual((await ids(storage, q("summ"))).ids, ["c"]);
    // Equal scores: newest first.
    assert.deepEqual((await ids(storage, q("alice", FIELD.from))).ids, [
      "d",
      "b",
      "a",
    ]);
  }));

Deno.test("search index: a moved copy is found in its new folder, a deleted one is gone with its postings", () =>
  withStorage(async (storage, kv) => {
    await add(storage, copy("a", 1000, { subject: "lunch" }), "soup");
    await add(storage, copy("b", 2000, { subject: "lunch" }), "salad");
    const mailbox = new Mailbox(storage, OWNER);
    await mailbox.update(["a"], { folder: "archive" });
    assert.deepEqual(
      (await ids(storage, q("lunch"), { folder: "archive" })).ids,
      ["a"],
    );
    assert.deepEqual(
      (await ids(storage, q("lunch"), { folder: "inbox" })).ids,
      ["b"],
    );
    await mailbox.update(["a"], { remove: true });
    assert.deepEqual((await ids(storage, q("lunch"))).ids, ["b"]);
    assert.deepEqual((await ids(storage, q("soup"))).ids, []);
    // Its postings, index records and drop mark are gone too.
    await indexSettled(storage);
    const left: string[] = [];
    // Heads as stored: `[size, value]`.
    for await (const e of kv.list<[number, unknown]>({ prefix: [] })) {
      const part = String(e.key[3]);
      if (!part.startsWith("fts")) continue;
      if (part === "fts") {
        const seqs = decodeBlock(Number(e.key[6]), e.value[1] as Uint8Array)
          .map((p) => p.seq);
        if (seqs.includes(1)) left.push(JSON.stringify(e.key));
      } else if (part !== "ftsl" && (e.key.includes("a") || e.key[5] === 1)) {
        left.push(JSON.stringify(e.key));
      }
    }
    assert.deepEqual(left, []);
  }));

Deno.test("search index: a copy stored but not yet indexed (a crash after the commit) is indexed by the next search", () =>
  withStorage(async (storage, kv) => {
    await add(storage, copy("a", 1000, { subject: "orchard" }), "apples");
    // Undo what the indexer did after the commit, keeping the mark: as if
    // the process died between the copy's commit and its indexing.
    await indexSettled(storage);
    for await (const e of kv.list({ prefix: [] })) {
      if (["fts", "ftsd", "ftsi"].includes(String(e.key[3]))) {
        await kv.delete(e.key);
      }
    }
    const mark = ["mod", "messages", "d", "ftsq", OWNER, 1];
    await kv.set(mark, { size: 8, value: "a" });
    assert.deepEqual((await ids(storage, q("apples"))).ids, ["a"]);
    assert.equal((await kv.get(mark)).value, null);
  }));

Deno.test("search index: pages through many matches with a cursor, each copy once, windows newest first", () =>
  withStorage(async (storage) => {
    await Promise.all(
      Array.from({ length: 450 }, (_, i) =>
        add(
          storage,
          copy(`m${String(i).padStart(3, "0")}`, 10_000 + i, {
            subject: i % 7 === 0 ? "weekly report" : "notes",
          }),
          "report body",
        )),
    );
    const seen: string[] = [];
    let cursor: string | undefined;
    let pages = 0;
    do {
      const page = await ids(storage, q("report"), { limit: 60, cursor });
      seen.push(...page.ids);
      cursor = page.cursor;
      pages++;
    } while (cursor && pages < 50);
    assert.equal(new Set(seen).size, 450);
    assert.equal(seen.length, 450);
    // The first window ranks subject hits (every 7th) before body hits.
    assert.equal(seen[0], "m448");
    assert.equal(seen[1], "m441");
    await assert.rejects(() => ids(storage, q("report"), { cursor: "nope" }));
  }));

Deno.test("search index: blocks of postings encode and decode seqs and field bits", () => {
  const postings = [
    { seq: 7, mask: 1 },
    { seq: 8, mask: 15 },
    { seq: 300, mask: 8 },
    { seq: 2 ** 40, mask: 2 },
  ];
  assert.deepEqual(decodeBlock(5, encodeBlock(5, postings)), postings);
  assert.equal(encodeBlock(7, postings.slice(0, 2)).length, 4);
});

Deno.test("search index: a mailbox past one block per term finds the newest first and pages on", () =>
  withStorage(async (storage) => {
    const n = BLOCK_MAX + 150;
    for (let from = 0; from < n; from += 500) {
      await Promise.all(
        Array.from({ length: Math.min(500, n - from) }, (_, k) => {
          const i = from + k;
          return add(
            storage,
            copy(`m${i}`, 1000 + i, { subject: "same" }),
            i % 300 === 0 ? "needle" : "hay",
          );
        }),
      );
    }
    const first = await ids(storage, q("same"), { limit: 3 });
    assert.deepEqual(first.ids, [`m${n - 1}`, `m${n - 2}`, `m${n - 3}`]);
    const needles: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await ids(storage, q("needle"), { cursor });
      needles.push(...page.ids);
      cursor = page.cursor;
    } while (cursor);
    const expected = Array.from({ length: n }, (_, i) => i)
      .filter((i) => i % 300 === 0).reverse().map((i) => `m${i}`);
    assert.deepEqual(needles, expected);
  }));

Deno.test("search index: one pass after the debounce indexes the copies of many commits, each term's block written once; a mailbox with few copies waits for a later pass", () =>
  withStorage(async (storage) => {
    // Passes wait for timers this test fires, on a clock it moves.
    const timers: (() => void)[] = [];
    let clock = 0;
    const indexer = indexerOf(storage, {
      schedule: (fn) => {
        timers.push(fn);
        return () => {};
      },
      now: () => clock,
      ownerCopies: 10,
      ownerWaitMs: 1000,
    });
    const blockWrites: string[] = [];
    const commit = storage.commit.bind(storage);
    storage.commit = (ops) => {
      for (const o of ops) {
        if (o.op === "set" && o.key[0] === "fts") {
          blockWrites.push(`${o.key[1]} ${o.key[2]}`);
        }
      }
      return commit(ops);
    };
    for (let i = 0; i < 12; i++) {
      await add(
        storage,
        copy(`m${i}`, 1000 + i, { subject: "weekly" }),
        "minutes",
      );
    }
    const carol = "carol@x.test";
    for (let i = 0; i < 2; i++) {
      await add(
        storage,
        copy(`c${i}`, 1000 + i, { owner: carol, subject: "weekly" }),
        "minutes",
      );
    }
    // Fourteen commits, nothing indexed yet: a pass waits for its timer.
    assert.equal(indexer.backlog, 14);
    assert.deepEqual(blockWrites, []);
    // Fire the next timer the indexer sets, then wait for its pass.
    let fired = 0;
    const tick = () => new Promise((r) => setTimeout(r, 5));
    const pass = async (left: number) => {
      for (let i = 0; i < 200 && timers.length === fired; i++) await tick();
      timers[fired++]();
      for (let i = 0; i < 200 && indexer.backlog > left; i++) await tick();
      assert.equal(indexer.backlog, left);
    };
    // Bob's twelve copies go in one pass: each term's block written once.
    await pass(2);
    assert.deepEqual(blockWrites.sort(), [
      `${OWNER} alice`,
      `${OWNER} minutes`,
      `${OWNER} test`,
      `${OWNER} weekly`,
      `${OWNER} x`,
    ]);
    // Carol's two wait until the first has waited a second.
    clock += 1000;
    await pass(0);
    const written: string[] = blockWrites;
    assert.equal(written.filter((w) => w.startsWith(carol)).length, 5);
    assert.equal((await ids(storage, q("weekly minutes"))).ids.length, 12);
  }));

Deno.test("search index: past its bound the backlog holds deliveries back until a pass has caught up", () =>
  withStorage(async (storage) => {
    // A timer that never fires: only the bound starts passes.
    const indexer = indexerOf(storage, {
      schedule: () => () => {},
      passCopies: 1_000_000,
      backlogMax: 5,
    });
    let most = 0;
    for (let i = 0; i < 23; i++) {
      await add(storage, copy(`m${i}`, 1000 + i, { subject: "bounded" }), "x");
      most = Math.max(most, indexer.backlog);
    }
    assert.ok(most <= 5, `backlog reached ${most}`);
    assert.ok(indexer.backlog < 5);
    // A search indexes what is still marked before it answers.
    assert.equal((await ids(storage, q("bounded"))).ids.length, 23);
    await indexSettled(storage);
  }));

Deno.test("search index: copies stored but never indexed (the process stopped before its pass) are found by a search after a restart", () =>
  withStorage(async (storage, kv) => {
    // This process's indexer never runs a pass.
    indexerOf(storage, { schedule: () => () => {} });
    for (let i = 0; i < 5; i++) {
      await add(storage, copy(`m${i}`, 1000 + i, { subject: "harbour" }), "x");
    }
    // Another process on the same database: its own storage and indexer.
    const restarted = new KvStorage(kv, "messages", 1e12);
    const found = await searchIndex(restarted, OWNER, {
      words: q("harbour"),
      limit: 50,
    });
    assert.deepEqual(found.messages.map((m) => m.id), [
      "m4",
      "m3",
      "m2",
      "m1",
      "m0",
    ]);
    // Indexed once: a second search finds the same, from the blocks alone.
    assert.equal(
      (await searchIndex(restarted, OWNER, { words: q("harbour"), limit: 50 }))
        .messages.length,
      5,
    );
  }));
