/**
 * Fill one mailbox with `count` messages directly through the messages
 * module's store (its own KV database, the records a delivery writes plus
 * the search index the indexer writes), far faster than sending them: the
 * scaling bench's mailboxes of 10,000 to 1,000,000 messages.
 *
 * Each message: a subject of 4 words and a text body of 40 words drawn from a
 * vocabulary of 20,000 with a Zipf distribution (about 300 bytes), from one
 * of 500 senders, a minute apart; the copy record, its list entry, its
 * content and owners list, the last 10,000 change records, its search
 * postings and index record, and at the end the mailbox state: the same
 * records and values a delivery and the indexer write, in the module
 * storage's own format (workers/sdk/storage.ts: a head `[size, value]` under
 * `["mod", "messages", "d", ...key]`, the bytes counted in its usage), written
 * with plain KV commits of 900 records instead of the storage's checks.
 *
 * @module
 */

import { BSON } from "bson";
import { keys } from "../kv/records.ts";
import {
  indexEntryOf,
  KEEP_CHANGES,
  key,
  type MailboxState,
  type MessageRecord,
  type Op as AtomicOp,
  storedCopy,
} from "../modules/messages/1.0.0/mailbox.ts";
import {
  BLOCK_BYTES,
  BLOCK_MAX,
  encodeBlock,
  ftsKey,
  indexedOf,
  postingBytes,
  type Postings,
  termsOf,
} from "../modules/messages/1.0.0/search_index.ts";

/** The vocabulary's words: `w<rank>` spelled as letters. */
export function word(rank: number): string {
  let s = "";
  let n = rank + 26 * 27;
  while (n > 0) {
    s = String.fromCharCode(97 + (n % 26)) + s;
    n = Math.floor(n / 26);
  }
  return s;
}

const VOCABULARY = 20_000;
/** Cumulative Zipf weights for drawing ranks. */
const cumulative = (() => {
  const c = new Float64Array(VOCABULARY);
  let sum = 0;
  for (let i = 0; i < VOCABULARY; i++) c[i] = sum += 1 / (i + 1);
  return c.map((x) => x / sum);
})();

/** A deterministic random source (mulberry32). */
function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6D2B79F5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function draw(rnd: () => number): string {
  const x = rnd();
  let lo = 0, hi = VOCABULARY - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cumulative[mid] < x) lo = mid + 1;
    else hi = mid;
  }
  return word(lo);
}

/** Records per KV commit (Deno KV allows 1,000 mutations), and commits in flight. */
const PER_COMMIT = 900;
const IN_FLIGHT = 4;

/**
 * Add `count` messages to `owner`'s inbox in the module database at `path`
 * (the owner must have no mail yet). Returns messages/s.
 */
export async function fillMailbox(
  path: string,
  owner: string,
  count: number,
  progress?: (done: number) => void,
): Promise<number> {
  const kv = await Deno.openKv(path);
  const started = performance.now();
  const start = Date.UTC(2024, 0, 1);
  const state: MailboxState = {
    seq: count,
    used: 0,
    counts: { inbox: { total: count, unseen: 0 } },
    folders: [],
  };
  let next = 0;
  const open = new Map<
    string,
    { first: number; postings: Postings; bytes: number }
  >();
  const blockOp = (
    term: string,
    block: { first: number; postings: Postings },
  ): AtomicOp & { op: "set" } => ({
    op: "set",
    key: ftsKey.block(owner, term, block.first),
    value: encodeBlock(block.first, block.postings),
  });
  const one = (n: number): AtomicOp[] => {
    const rnd = random(n * 7919 + owner.length);
    const subject = Array.from({ length: 4 }, () => draw(rnd)).join(" ");
    const body = Array.from({ length: 40 }, () => draw(rnd)).join(" ") + ".";
    const id = `${owner.split("@")[0]}-${n.toString(36).padStart(6, "0")}`;
    const seen = n % 3 !== 0;
    const record: MessageRecord = {
      id,
      message_id: id,
      global_id: `${id}@bench.test`,
      owner,
      folder: "inbox",
      from: `sender${Math.floor(rnd() * 500)}@bench.test`,
      to: [owner],
      cc: [],
      bcc: [],
      subject,
      format: "text",
      encrypted: false,
      attachments: [],
      in_reply_to: null,
      thread: `${id}@bench.test`,
      seen,
      flagged: false,
      date: new Date(start + n * 60_000),
      size: body.length + subject.length + 200,
      preview: body.slice(0, 160),
    };
    state.used += record.size;
    if (!seen) state.counts.inbox.unseen++;
    const seq = n + 1;
    const terms = termsOf(record, body);
    const ops: AtomicOp[] = [
      {
        op: "set",
        key: key.msg(owner, id),
        value: storedCopy(record, seq),
        fresh: true,
      },
      {
        op: "set",
        key: key.idx(owner, "inbox", record.date, id),
        value: indexEntryOf(record),
        fresh: true,
      },
      { op: "set", key: key.content(id), value: { body }, fresh: true },
      { op: "set", key: key.owners(id), value: [owner], fresh: true },
      {
        op: "set",
        key: ftsKey.indexed(owner, seq),
        value: indexedOf(id, "inbox", terms),
        fresh: true,
      },
    ];
    if (seq > count - KEEP_CHANGES) {
      ops.push({
        op: "set",
        key: key.chg(owner, seq),
        value: [id, "inbox"],
        fresh: true,
      });
    }
    // Postings join their term's open block; a full one is written.
    for (const [term, mask] of terms) {
      let block = open.get(term);
      const size = block ? postingBytes(seq - block.postings.at(-1)!.seq) : 2;
      if (
        block &&
        (block.postings.length >= BLOCK_MAX || block.bytes + size > BLOCK_BYTES)
      ) {
        ops.push(blockOp(term, block));
        block = undefined;
      }
      if (!block) {
        open.set(term, block = { first: seq, postings: [], bytes: 0 });
      }
      block.postings.push({ seq, mask });
      block.bytes += block.postings.length === 1 ? 2 : size;
    }
    return ops;
  };
  let bytes = 0;
  const head = (op: AtomicOp & { op: "set" }): [Deno.KvKey, unknown] => {
    const size = BSON.calculateObjectSize({ v: op.value });
    bytes += size;
    return [[...keys.moduleData("messages"), "d", ...op.key], [size, op.value]];
  };
  // Within KV's bounds of one commit: 1,000 mutations, 800 KiB.
  const commit = async (records: [Deno.KvKey, unknown][]) => {
    let op = kv.atomic();
    let bytes = 0;
    let n = 0;
    for (const [k, v] of records) {
      const size = (v as [number, unknown])[0] + 200;
      if (n > 0 && (n >= PER_COMMIT || bytes + size > 600_000)) {
        if (!(await op.commit()).ok) throw new Error("fill: a commit failed");
        op = kv.atomic();
        bytes = 0;
        n = 0;
      }
      op.set(k, v);
      bytes += size;
      n++;
    }
    if (n > 0 && !(await op.commit()).ok) {
      throw new Error("fill: a commit failed");
    }
  };
  try {
    await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
      let records: [Deno.KvKey, unknown][] = [];
      while (next < count) {
        const n = next++;
        for (const op of one(n)) {
          if (op.op === "set") records.push(head(op));
        }
        if (records.length >= PER_COMMIT - 50) {
          await commit(records);
          records = [];
        }
        if (progress && (n + 1) % 10_000 === 0) progress(n + 1);
      }
      if (records.length) await commit(records);
    }));
    // The blocks still open, and the state.
    await commit([...open].map(([term, block]) => head(blockOp(term, block))));
    await commit([
      head({ op: "set", key: key.state(owner), value: state }),
    ]);
    await kv.atomic().sum(
      [...keys.moduleUsage("messages"), "add"],
      BigInt(bytes),
    ).commit();
    return count / ((performance.now() - started) / 1000);
  } finally {
    kv.close();
  }
}
