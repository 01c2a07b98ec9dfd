/**
 * Full-text search of a mailbox: an inverted index in module storage,
 * maintained at delivery, read newest first, never a scan of the mailbox.
 *
 * A copy is known to the index by its sequence number in its mailbox (the
 * `seq` of its `new` change: given out in commit order, so newest first is
 * highest first). Keys (inside the module's namespace, beside mailbox.ts's):
 * - `["ftsp", owner]` -> the highest seq whose postings are in the blocks:
 *   the copies past it (their `ftsd` records, written in the same atomic
 *   operation as the copies themselves) are still to index; without it, the
 *   mailbox state's `ix` less one (a crash before a copy is indexed loses
 *   nothing: the next search of that mailbox, or the next delivery to it,
 *   indexes it)
 * - `["ftsq", owner, seq]` -> copy id: a copy still to index that was stored
 *   with a mark instead of its terms (by an earlier version: read with its
 *   body when indexed)
 * - `["fts", owner, term, firstSeq]` -> a block of postings of `term`: for
 *   each copy holding it, ascending, the seq (as a varint, the difference to
 *   the one before, the first to `firstSeq`) and one byte of field bits
 *   ({@link FIELD}); a block holds at most {@link BLOCK_MAX} postings
 * - `["ftsd", owner, seq]` -> {@link Indexed}: the copy's id, folder and
 *   terms (the indexer's input; a search checks a copy's folder in it, a
 *   deletion drops its postings by it); deleted with the copy, so a deleted
 *   copy is never found
 * - `["ftsi", owner, copyId]` -> seq (a moved or deleted copy's index record),
 *   for copies indexed from a mark and those stored before 2026-11-28; a
 *   copy stored since keeps its seq itself (mailbox.ts `StoredRecord`)
 * - `["ftsx", owner, seq]` -> terms: postings of a deleted copy to drop
 * - `["ftsl", owner]` -> {@link Lease}: who updates the mailbox's blocks now
 *   (one writer at a time, across processes; a lease held by a dead one
 *   expires)
 *
 * What is indexed: the subject, the sender (address and, for email, display
 * name), attachment names, and the body when the server can read it. An
 * end-to-end encrypted body is opaque and not indexed; its subject, sender
 * and attachment names are (the server stores them in the clear).
 *
 * Why blocks in KV and not a search library (minisearch, flexsearch): those
 * hold the whole index in memory and persist it as one document; a mailbox
 * of a million messages would be read whole at start and rewritten on every
 * change. Why blocks and not a key per posting: each key is a row of its
 * own (about 270 bytes on disk here) and a message's 40-100 terms land on as
 * many pages of the database: 99 messages/s filling, 12 KiB per message.
 * A block is one row of at most {@link BLOCK_BYTES} (hundreds of postings of
 * 2-4 bytes), and indexing a batch of copies rewrites each of their terms'
 * newest block once. The background {@link Indexer} gathers the copies of
 * many commits into one pass.
 *
 * @module
 */

import type {
  ModuleStorage,
  StorageEntry,
  StorageKey,
} from "../../../workers/sdk/mod.ts";
import {
  type MessageRecord,
  readBody,
  recordOf,
  type StoredRecord,
  type Summary,
  summaryOf,
} from "./mailbox.ts";

/** Field bits of a posting. */
export const FIELD = { subject: 1, from: 2, attachment: 4, body: 8 } as const;
/** Weight of each field in a result's score (the best field of each word counts). */
const WEIGHT: [number, number][] = [
  [FIELD.subject, 8],
  [FIELD.from, 4],
  [FIELD.attachment, 2],
  [FIELD.body, 1],
];
/** Characters of a term (longer words are cut). */
const TERM_MAX = 32;
/** Distinct terms indexed per copy. */
const TERMS_MAX = 600;
/** Characters of a body read for terms. */
const BODY_CHARS = 256 * 1024;
/**
 * Postings per block: at most 6 bytes each, under one storage value; an
 * indexing round rewrites each of its terms' newest block, so smaller
 * blocks write less (half a block per term on average) and read more.
 */
export const BLOCK_MAX = 1000;
/**
 * Bytes of a block's postings: with its key it stays within one row of the
 * database (module storage splits a larger value into chunks, and each
 * rewrite of it would write new chunks and delete the old ones).
 */
export const BLOCK_BYTES = 640;

/** Bytes a posting takes in a block: `delta` (its seq less the one before) as a varint, and its field bits. */
export function postingBytes(delta: number): number {
  let bytes = 2;
  for (; delta >= 0x80; bytes++) delta = Math.floor(delta / 0x80);
  return bytes;
}
/** Bytes of blocks per atomic write of the indexer (KV takes 800 KiB). */
const BYTES_MAX = 400_000;
/** Copies indexed per round (each one check of the round's last write, of 100). */
const BATCH = 80;
/** Blocks a search reads per term at a time (newest first). */
const BLOCKS_PER_READ = 4;
/** Terms a query word of 2 or more characters expands to (in key order). */
const EXPAND_MAX = 16;
/** Matches ranked together: a search's results are pages of windows of this many. */
const WINDOW = 100;
/** Postings one search call reads at most before it answers (with a cursor). */
const SCAN_MAX = 10_000;
/** Operations per atomic write of the indexer. */
const OPS_MAX = 500;
/** Milliseconds a lease on a mailbox's index lasts. */
const LEASE_MS = 30_000;

/** Keys of the index. */
export const ftsKey = {
  pending: (owner: string, seq: number) => ["ftsq", owner, seq],
  block: (owner: string, term: string, first: number) => [
    "fts",
    owner,
    term,
    first,
  ],
  indexed: (owner: string, seq: number) => ["ftsd", owner, seq],
  seqOf: (owner: string, id: string) => ["ftsi", owner, id],
  drop: (owner: string, seq: number) => ["ftsx", owner, seq],
  lease: (owner: string) => ["ftsl", owner],
  progress: (owner: string) => ["ftsp", owner],
};

/** Copies stored with their terms and not yet in the blocks: past the progress record. */
interface Unindexed {
  /** The progress record as read (null: none yet). */
  progress: StorageEntry<number> | null;
  /** Their index records, by seq ascending. */
  items: StorageEntry<Indexed>[];
  /** More are past these. */
  more: boolean;
}

async function unindexed(
  storage: ModuleStorage,
  owner: string,
): Promise<Unindexed> {
  const [progress, state] = await storage.getMany<unknown>([
    ftsKey.progress(owner),
    ["state", owner],
  ]);
  const done = typeof progress?.value === "number"
    ? progress.value
    : ((state?.value as { ix?: number } | undefined)?.ix ?? Infinity) - 1;
  const entry = progress as StorageEntry<number> | null;
  if (!Number.isFinite(done)) {
    return { progress: entry, items: [], more: false };
  }
  const page = await storage.list<Indexed>(["ftsd", owner], {
    start: ftsKey.indexed(owner, done + 1),
    limit: BATCH,
  });
  return {
    progress: entry,
    items: page.items,
    more: page.cursor !== undefined,
  };
}

/** What the index keeps of one copy. */
export interface Indexed {
  /** Copy id. */
  id: string;
  /** Its folder (updated by `move`). */
  f: string;
  /** Its terms, each prefixed by its field bits as one hex digit. */
  w: string[];
}

/** Who updates a mailbox's blocks, until when (epoch ms). */
interface Lease {
  holder: string;
  until: number;
}

/** This process's name as a lease holder. */
const HOLDER = crypto.randomUUID();

/** Words of a text: lowercase, accents removed, letters and digits. */
export function words(text: string): string[] {
  const found = text.normalize("NFKD").replace(/\p{M}+/gu, "").toLowerCase()
    .match(/[\p{L}\p{N}]+/gu) ?? [];
  return found.map((w) => w.slice(0, TERM_MAX));
}

/** The terms of a copy with their field bits. */
export function termsOf(
  record: MessageRecord,
  body: string | Uint8Array | null,
): Map<string, number> {
  const terms = new Map<string, number>();
  const add = (text: string, field: number) => {
    for (const w of words(text)) {
      if (terms.size >= TERMS_MAX && !terms.has(w)) return;
      terms.set(w, (terms.get(w) ?? 0) | field);
    }
  };
  add(record.subject, FIELD.subject);
  add(record.from, FIELD.from);
  if (record.email?.from_name) add(record.email.from_name, FIELD.from);
  for (const a of record.attachments) {
    if (!a.inline) add(a.name, FIELD.attachment);
  }
  if (!record.encrypted && typeof body === "string") {
    let text = body.slice(0, BODY_CHARS);
    if (record.format === "html") text = text.replace(/<[^>]*>/g, " ");
    add(text, FIELD.body);
  }
  return terms;
}

/** The index record of a copy's terms. */
export function indexedOf(
  id: string,
  folder: string,
  terms: Map<string, number>,
): Indexed {
  return { id, f: folder, w: [...terms].map(([t, m]) => m.toString(16) + t) };
}

/** Postings of a block: seqs ascending, with their field bits. */
export type Postings = { seq: number; mask: number }[];

/** Encode postings (ascending, all at least `first`). */
export function encodeBlock(first: number, postings: Postings): Uint8Array {
  const out = new Uint8Array(postings.length * 10);
  let at = 0;
  let previous = first;
  for (const { seq, mask } of postings) {
    let delta = seq - previous;
    previous = seq;
    while (delta >= 0x80) {
      out[at++] = (delta % 0x80) | 0x80;
      delta = Math.floor(delta / 0x80);
    }
    out[at++] = delta;
    out[at++] = mask;
  }
  return out.slice(0, at);
}

/** Decode a block written by {@link encodeBlock}. */
export function decodeBlock(first: number, bytes: Uint8Array): Postings {
  const postings: Postings = [];
  let at = 0;
  let seq = first;
  while (at < bytes.length) {
    let delta = 0;
    let scale = 1;
    while (bytes[at] & 0x80) {
      delta += (bytes[at++] & 0x7f) * scale;
      scale *= 0x80;
    }
    delta += bytes[at++] * scale;
    seq += delta;
    postings.push({ seq, mask: bytes[at++] });
  }
  return postings;
}

/** One in-process chain per mailbox, so two indexings of one mailbox do not race here. */
const chains = new Map<string, Promise<void>>();

function serialized(owner: string, work: () => Promise<void>): Promise<void> {
  const before = chains.get(owner) ?? Promise.resolve();
  const mine = before.then(work, work);
  const tail = mine.catch(() => {});
  chains.set(owner, tail);
  tail.then(() => {
    if (chains.get(owner) === tail) chains.delete(owner);
  });
  return mine;
}

type Ops = Parameters<ModuleStorage["atomic"]>[0];

/**
 * Bring `owner`'s index up to date: copies marked to index are added to
 * their terms' newest blocks, deleted copies' postings dropped. One process
 * at a time holds the mailbox's lease; another finding it held returns (the
 * holder is at work). Appending is idempotent (a block takes only seqs past
 * its last), so a round cut short by a crash is done again safely.
 */
export function indexPending(
  storage: ModuleStorage,
  owner: string,
  now: () => number = Date.now,
): Promise<void> {
  return serialized(owner, async () => {
    let lease: { versionstamp: string } | null = null;
    try {
      for (let round = 0; round < 100_000; round++) {
        const [marks, drops, fresh] = await Promise.all([
          storage.list<string>(["ftsq", owner], { limit: BATCH }),
          storage.list<string[]>(["ftsx", owner], { limit: BATCH }),
          unindexed(storage, owner),
        ]);
        if (
          marks.items.length === 0 && drops.items.length === 0 &&
          fresh.items.length === 0
        ) return;
        lease ??= await takeLease(storage, owner, now);
        if (!lease) return;
        // All there is (copies stored since are noted for a later pass):
        // the round's last write gives the lease back.
        const final = marks.cursor === undefined &&
          drops.cursor === undefined && !fresh.more;
        if (
          !(await indexRound(
            storage,
            owner,
            marks.items,
            drops.items,
            fresh,
            lease,
            final,
          ))
        ) {
          // The lease was lost (or a copy changed): look again.
          lease = null;
          await new Promise((r) => setTimeout(r, 5 * Math.min(round + 1, 20)));
        } else if (final) {
          lease = null;
          return;
        }
      }
    } finally {
      if (lease) {
        await storage.atomic([
          {
            op: "check",
            key: ftsKey.lease(owner),
            versionstamp: lease.versionstamp,
          },
          { op: "delete", key: ftsKey.lease(owner) },
        ]);
      }
    }
  });
}

async function takeLease(
  storage: ModuleStorage,
  owner: string,
  now: () => number,
): Promise<{ versionstamp: string } | null> {
  for (let attempt = 0; attempt < 3; attempt++) {
    const held = await storage.get<Lease>(ftsKey.lease(owner));
    if (held && held.value.holder !== HOLDER && held.value.until > now()) {
      return null;
    }
    const versionstamp = await storage.commit([
      {
        op: "check",
        key: ftsKey.lease(owner),
        versionstamp: held?.versionstamp ?? null,
      },
      {
        op: "set",
        key: ftsKey.lease(owner),
        value: { holder: HOLDER, until: now() + LEASE_MS } satisfies Lease,
      },
    ]);
    if (versionstamp) return { versionstamp };
  }
  return null;
}

/** The newest block of `term` at or before `seq` (or the newest of all). */
async function blockAt(
  storage: ModuleStorage,
  owner: string,
  term: string,
  seq?: number,
): Promise<{ first: number; postings: Postings } | null> {
  const page = await storage.list<Uint8Array>(["fts", owner, term], {
    reverse: true,
    limit: 1,
    end: seq === undefined ? undefined : ftsKey.block(owner, term, seq + 1),
  });
  const entry = page.items[0];
  if (!entry) return null;
  const first = Number(entry.key[3]);
  return { first, postings: decodeBlock(first, entry.value) };
}

/** One round of indexing under the lease (given back by its last write when `release`); false when a write's checks failed. */
async function indexRound(
  storage: ModuleStorage,
  owner: string,
  marks: { key: StorageKey; value: string; versionstamp: string }[],
  drops: { key: StorageKey; value: string[]; versionstamp: string }[],
  fresh: Unindexed,
  lease: { versionstamp: string },
  release: boolean,
): Promise<boolean> {
  const leaseCheck = {
    op: "check" as const,
    key: ftsKey.lease(owner),
    versionstamp: lease.versionstamp,
  };
  // Copies stored with a mark (by an earlier version) are read, with their
  // bodies.
  const records = await storage.getMany<StoredRecord>(
    marks.map((m) => ["msg", owner, m.value]),
  );
  // Postings to add and to drop, by term.
  const adds = new Map<string, Postings>();
  /** Terms of each copy indexed in this round, by seq. */
  const termsBySeq = new Map<number, string[]>();
  const last: Ops = [];
  const checks: Ops = [];
  // Copies stored with their terms (moved or deleted meanwhile: the mover
  // keeps the index record's folder, the deleter drops its postings).
  for (const entry of fresh.items) {
    const seq = Number(entry.key[2]);
    for (const w of entry.value.w) {
      const term = w.slice(1);
      const list = adds.get(term) ?? [];
      list.push({ seq, mask: parseInt(w[0], 16) });
      adds.set(term, list);
    }
  }
  if (fresh.items.length > 0) {
    checks.push({
      op: "check",
      key: ftsKey.progress(owner),
      versionstamp: fresh.progress?.versionstamp ?? null,
    });
    last.push({
      op: "set",
      key: ftsKey.progress(owner),
      value: Number(fresh.items.at(-1)!.key[2]),
    });
  }
  for (let i = 0; i < marks.length; i++) {
    const mark = marks[i];
    const seq = Number(mark.key[2]);
    last.push({ op: "delete", key: mark.key });
    const record = records[i];
    // Deleted before it was indexed: only the mark is left.
    if (!record) continue;
    checks.push({
      op: "check",
      key: record.key,
      versionstamp: record.versionstamp,
    });
    const copy = recordOf(record);
    const body = copy.encrypted
      ? null
      : await readBody(storage, copy.message_id);
    const terms = termsOf(copy, body);
    termsBySeq.set(seq, [...terms.keys()]);
    for (const [term, mask] of terms) {
      const list = adds.get(term) ?? [];
      list.push({ seq, mask });
      adds.set(term, list);
    }
    last.push(
      {
        op: "set",
        key: ftsKey.indexed(owner, seq),
        value: indexedOf(copy.id, copy.folder, terms),
      },
      { op: "set", key: ftsKey.seqOf(owner, copy.id), value: seq },
    );
  }
  const drop = new Map<string, Set<number>>();
  for (const d of drops) {
    const seq = Number(d.key[2]);
    for (const term of d.value) {
      const set = drop.get(term) ?? new Set();
      set.add(seq);
      drop.set(term, set);
    }
    last.push({ op: "delete", key: d.key });
  }
  // The blocks to rewrite: each term's newest (appends), and those holding
  // dropped seqs.
  const blocks: Ops = [];
  const terms = [...new Set([...adds.keys(), ...drop.keys()])];
  for (let i = 0; i < terms.length; i += 32) {
    await Promise.all(
      terms.slice(i, i + 32).map(async (term) => {
        const changed = new Map<number, Postings>();
        for (const seq of drop.get(term) ?? []) {
          const block = await blockAt(storage, owner, term, seq);
          if (!block) continue;
          const postings = changed.get(block.first) ?? block.postings;
          changed.set(block.first, postings.filter((p) => p.seq !== seq));
        }
        const add = adds.get(term);
        if (add) {
          const newest = await blockAt(storage, owner, term);
          let first = newest?.first;
          let postings = first === undefined
            ? []
            : changed.get(first) ?? newest!.postings;
          const top = postings.at(-1)?.seq ?? -1;
          let bytes = first === undefined
            ? 0
            : encodeBlock(first, postings).length;
          for (const p of add) {
            if (p.seq <= top) continue; // indexed before (a round done again)
            const size = postingBytes(p.seq - (postings.at(-1)?.seq ?? p.seq));
            if (
              first === undefined || postings.length >= BLOCK_MAX ||
              bytes + size > BLOCK_BYTES
            ) {
              if (first !== undefined) changed.set(first, postings);
              first = p.seq;
              postings = [];
              bytes = 0;
            }
            postings.push(p);
            bytes += postings.length === 1 ? 2 : size;
          }
          if (first !== undefined) changed.set(first, postings);
        }
        for (const [first, postings] of changed) {
          const key = ftsKey.block(owner, term, first);
          blocks.push(
            postings.length
              ? { op: "set", key, value: encodeBlock(first, postings) }
              : { op: "delete", key },
          );
        }
      }),
    );
  }
  // In writes of at most OPS_MAX operations and BYTES_MAX bytes.
  let chunk: Ops = [];
  let bytes = 0;
  for (const op of [...blocks, null]) {
    const size = op?.op === "set" ? (op.value as Uint8Array).length + 100 : 100;
    if (
      chunk.length > 0 &&
      (op === null || chunk.length >= OPS_MAX || bytes + size > BYTES_MAX)
    ) {
      if (!(await storage.atomic([leaseCheck, ...chunk]))) return false;
      chunk = [];
      bytes = 0;
    }
    if (op) {
      chunk.push(op);
      bytes += size;
    }
  }
  // The copies' records and the marks' removal, checked against the copies
  // as read (one moved or deleted meanwhile is read again next round; its
  // postings are already in, and not added twice).
  const done: Ops = release ? [{ op: "delete", key: ftsKey.lease(owner) }] : [];
  if (await storage.atomic([leaseCheck, ...checks, ...last, ...done])) {
    return true;
  }
  // A copy deleted meanwhile has postings just added: they are dropped
  // like a deleted copy's (the next round finds its mark without a copy).
  const now = await storage.getMany(marks.map((m) => ["msg", owner, m.value]));
  const gone: Ops = [];
  marks.forEach((mark, i) => {
    const terms = termsBySeq.get(Number(mark.key[2]));
    if (!now[i] && terms) {
      gone.push({
        op: "set",
        key: ftsKey.drop(owner, Number(mark.key[2])),
        value: terms,
      });
    }
  });
  if (gone.length) await storage.atomic([leaseCheck, ...gone]);
  return false;
}

/** Milliseconds the indexer waits after a delivery, so one pass covers the copies of many commits. */
export const DEBOUNCE_MS = 50;
/** Copies waiting past which a pass starts without waiting (and takes every mailbox). */
const PASS_COPIES = 1000;
/**
 * A mailbox joins a pass once this many of its copies wait, or once its
 * first has waited {@link OWNER_WAIT_MS}: a mailbox getting a copy now and
 * then (a sender's Sent) has its terms' blocks rewritten for several
 * copies at once rather than for each.
 */
const OWNER_COPIES = 16;
/** Milliseconds a mailbox's copies wait at most for a pass (unless a search or the bound asks sooner). */
const OWNER_WAIT_MS = 1000;
/** Copies waiting past which deliveries wait for the indexer (the backlog's bound). */
const BACKLOG_MAX = 4000;
/** Mailboxes indexed side by side in a pass (their writes share group commits). */
const OWNERS_AT_ONCE = 8;

/** How the background indexer of a storage paces itself (tests inject a timer). */
export interface IndexerOptions {
  /** Milliseconds between a delivery and the pass that indexes it. */
  debounceMs?: number;
  /** Copies waiting that start a pass at once. */
  passCopies?: number;
  /** Copies of a mailbox that make it join the next pass. */
  ownerCopies?: number;
  /** Milliseconds after which a mailbox's copies join the next pass anyway. */
  ownerWaitMs?: number;
  /** The clock (milliseconds). */
  now?: () => number;
  /** Copies waiting past which {@link Indexer.room} holds deliveries back. */
  backlogMax?: number;
  /** Run `fn` after `ms`; returns a cancel function (default: setTimeout). */
  schedule?: (fn: () => void, ms: number) => () => void;
}

function scheduleTimeout(fn: () => void, ms: number): () => void {
  const timer = setTimeout(fn, ms);
  return () => clearTimeout(timer);
}

/**
 * The background indexer of one storage: deliveries tell it which mailboxes
 * got copies ({@link note}); after a short debounce (or at once past a count)
 * one pass indexes the mailboxes noted meanwhile that have enough copies
 * waiting or have waited long enough, a few side by side, so each term's
 * newest block is rewritten once per pass rather than once per commit, and
 * it yields to the event loop between mailboxes. The copies
 * noted and not yet indexed are bounded: past {@link IndexerOptions.backlogMax}
 * a delivery waits in {@link room} until a pass has caught up.
 */
export class Indexer {
  readonly #storage: ModuleStorage;
  readonly #debounceMs: number;
  readonly #passCopies: number;
  readonly #backlogMax: number;
  readonly #schedule: (fn: () => void, ms: number) => () => void;
  readonly #ownerCopies: number;
  readonly #ownerWaitMs: number;
  readonly #now: () => number;
  /** Mailboxes noted and not taken by a pass yet: their copies, since when. */
  #waiting = new Map<string, { copies: number; since: number }>();
  /** Copies noted and not yet indexed (waiting, or in the running pass). */
  #backlog = 0;
  #loop: Promise<void> | null = null;
  /** Ends the debounce now (set while the loop waits). */
  #wake: (() => void) | null = null;
  #urgent = false;
  #roomWaiters: (() => void)[] = [];

  /** An indexer of `storage`. */
  constructor(storage: ModuleStorage, options: IndexerOptions = {}) {
    this.#storage = storage;
    this.#debounceMs = options.debounceMs ?? DEBOUNCE_MS;
    this.#passCopies = options.passCopies ?? PASS_COPIES;
    this.#backlogMax = options.backlogMax ?? BACKLOG_MAX;
    this.#schedule = options.schedule ?? scheduleTimeout;
    this.#ownerCopies = options.ownerCopies ?? OWNER_COPIES;
    this.#ownerWaitMs = options.ownerWaitMs ?? OWNER_WAIT_MS;
    this.#now = options.now ?? Date.now;
  }

  /** Copies noted and not yet indexed. */
  get backlog(): number {
    return this.#backlog;
  }

  /** `owners` got copies (or lost some): index them in the next pass. */
  note(owners: Map<string, number>): void {
    for (const [owner, copies] of owners) {
      const entry = this.#waiting.get(owner);
      if (entry) entry.copies += copies;
      else this.#waiting.set(owner, { copies, since: this.#now() });
      this.#backlog += copies;
    }
    if (this.#backlog >= this.#passCopies) this.#hurry();
    this.#loop ??= this.#run();
  }

  /** Resolves once the backlog is under its bound (a pass is started for it). */
  async room(): Promise<void> {
    while (this.#backlog >= this.#backlogMax && this.#loop) {
      this.#hurry();
      await new Promise<void>((resolve) => this.#roomWaiters.push(resolve));
    }
  }

  /** Resolves once every noted mailbox is indexed (passes start at once). */
  async settled(): Promise<void> {
    while (this.#loop) {
      this.#hurry();
      await this.#loop;
    }
  }

  #hurry(): void {
    this.#urgent = true;
    this.#wake?.();
  }

  async #run(): Promise<void> {
    try {
      while (this.#waiting.size > 0) {
        if (!this.#urgent) {
          await new Promise<void>((resolve) => {
            const cancel = this.#schedule(resolve, this.#debounceMs);
            this.#wake = () => {
              cancel();
              resolve();
            };
          });
          this.#wake = null;
        }
        const all = this.#urgent;
        this.#urgent = false;
        const now = this.#now();
        const pass: [string, number][] = [];
        for (const [owner, { copies, since }] of this.#waiting) {
          if (
            all || copies >= this.#ownerCopies ||
            now - since >= this.#ownerWaitMs
          ) {
            pass.push([owner, copies]);
            this.#waiting.delete(owner);
          }
        }
        for (let i = 0; i < pass.length; i += OWNERS_AT_ONCE) {
          await Promise.all(
            pass.slice(i, i + OWNERS_AT_ONCE).map(async ([owner, copies]) => {
              try {
                await indexPending(this.#storage, owner);
              } catch {
                // Left marked: the next search of that mailbox indexes it.
              }
              this.#backlog -= copies;
            }),
          );
          this.#release();
          // Deliveries waiting in the event loop go first.
          await new Promise((resolve) => setTimeout(resolve, 0));
        }
      }
    } finally {
      this.#loop = null;
      this.#release();
    }
  }

  #release(): void {
    if (this.#backlog >= this.#backlogMax && this.#loop) return;
    for (const resolve of this.#roomWaiters.splice(0)) resolve();
  }
}

const indexers = new WeakMap<ModuleStorage, Indexer>();

/** The background indexer of `storage` (made with `options` the first time). */
export function indexerOf(
  storage: ModuleStorage,
  options?: IndexerOptions,
): Indexer {
  let indexer = indexers.get(storage);
  if (!indexer) indexers.set(storage, indexer = new Indexer(storage, options));
  return indexer;
}

/**
 * Index `owners`' new copies soon, off the delivery's path (their marks are
 * already stored: this only makes it happen before the next search asks).
 * `owners` maps each mailbox to the copies it got (its share of the backlog).
 */
export function indexSoon(
  storage: ModuleStorage,
  owners: Map<string, number>,
): void {
  indexerOf(storage).note(owners);
}

/** Resolves once the background indexing of `storage` has nothing left. */
export async function indexSettled(storage: ModuleStorage): Promise<void> {
  await indexers.get(storage)?.settled();
}

/** One word of a query and the fields it must be in. */
export interface QueryWord {
  /** The word (a prefix of the terms it matches, exactly when 1 character). */
  text: string;
  /** Field bits: the word must be in one of these fields. */
  fields: number;
}

/** Where a search goes on: below seq `b` (null: from the newest), skipping `s` ranked matches. */
interface Cursor {
  b: number | null;
  s: number;
}

function encodeCursor(c: Cursor): string {
  return btoa(JSON.stringify(c));
}

function decodeCursor(text: string | undefined): Cursor | null {
  if (!text) return { b: null, s: 0 };
  try {
    const c = JSON.parse(atob(text));
    if (
      typeof c === "object" && c !== null && Number.isInteger(c.s) &&
      c.s >= 0 && (c.b === null || Number.isInteger(c.b))
    ) return { b: c.b, s: c.s };
  } catch {
    // not a cursor
  }
  return null;
}

/** A cursor that is not one this search gave. */
export class BadCursor extends Error {}

/** The terms a query word matches: itself and, from 2 characters, terms it begins (at most {@link EXPAND_MAX}). */
async function expand(
  storage: ModuleStorage,
  owner: string,
  word: string,
): Promise<string[]> {
  if (word.length < 2) return [word];
  const terms: string[] = [];
  let start: StorageKey = ["fts", owner, word];
  while (terms.length < EXPAND_MAX) {
    const page = await storage.list(["fts", owner], { start, limit: 1 });
    const term = page.items[0]?.key[2];
    if (typeof term !== "string" || !term.startsWith(word)) break;
    terms.push(term);
    start = ["fts", owner, term + "\u0000"];
  }
  return terms;
}

/** Postings of `term` below seq `below` (all when null), newest first, one block at a time. */
class TermReader {
  #below: number | null;
  #buffer: Postings = [];
  /** The next posting of {@link #buffer} to take. */
  #at = 0;
  #done = false;

  constructor(
    readonly storage: ModuleStorage,
    readonly owner: string,
    readonly term: string,
    below: number | null,
  ) {
    this.#below = below;
  }

  /** The newest posting not yet taken, or null when none is left. */
  async peek(): Promise<{ seq: number; mask: number } | null> {
    while (this.#at === this.#buffer.length && !this.#done) {
      this.#buffer = [];
      this.#at = 0;
      const page = await this.storage.list<Uint8Array>(
        ["fts", this.owner, this.term],
        {
          reverse: true,
          limit: BLOCKS_PER_READ,
          end: this.#below === null
            ? undefined
            : ftsKey.block(this.owner, this.term, this.#below),
        },
      );
      if (page.items.length === 0) {
        this.#done = true;
        break;
      }
      const below = this.#below;
      for (const entry of page.items) {
        const first = Number(entry.key[3]);
        this.#buffer.push(
          ...decodeBlock(first, entry.value)
            .filter((p) => below === null || p.seq < below).reverse(),
        );
        this.#below = first;
      }
    }
    return this.#buffer[this.#at] ?? null;
  }

  /** Take the posting {@link peek} showed. */
  take(): void {
    this.#at++;
  }
}

/** The union of a word's terms' postings, newest first. */
class WordReader {
  constructor(readonly readers: TermReader[]) {}

  /** The word matches no term. */
  get empty(): boolean {
    return this.readers.length === 0;
  }

  /** The next posting (field bits of all its terms), or null. */
  async next(): Promise<{ seq: number; mask: number } | null> {
    const heads = await Promise.all(this.readers.map((r) => r.peek()));
    let top = -1;
    for (const h of heads) if (h && h.seq > top) top = h.seq;
    if (top < 0) return null;
    let mask = 0;
    heads.forEach((h, i) => {
      if (h?.seq === top) {
        mask |= h.mask;
        this.readers[i].take();
      }
    });
    return { seq: top, mask };
  }

  /** Field bits of copy `seq` (0: not holding the word); only ever asked with falling seqs. */
  async maskAt(seq: number): Promise<number> {
    let mask = 0;
    for (const reader of this.readers) {
      for (
        let p = await reader.peek();
        p && p.seq >= seq;
        p = await reader.peek()
      ) {
        if (p.seq === seq) mask |= p.mask;
        reader.take();
      }
    }
    return mask;
  }
}

/**
 * Search `owner`'s mailbox: copies holding every word (each a prefix), in
 * the fields asked, in `folder` when given. Results come ranked (the fields
 * the words are in: subject, sender, attachment name, body) in windows of
 * the {@link WINDOW} newest matches, newest first among equals; `cursor`
 * goes on. Reads only postings of the query's words, at most
 * {@link SCAN_MAX} per call.
 */
export async function searchIndex(
  storage: ModuleStorage,
  owner: string,
  query: {
    words: QueryWord[];
    folder?: string;
    limit: number;
    cursor?: string;
  },
): Promise<{ messages: Summary[]; cursor?: string }> {
  const cursor = decodeCursor(query.cursor);
  if (!cursor) throw new BadCursor("not a search cursor");
  await indexPending(storage, owner);
  // The longest word drives (likely the rarest); the others are checked.
  const ordered = [...query.words].sort((a, b) =>
    b.text.length - a.text.length
  );
  const driver = ordered[0];
  const readerOf = async (word: QueryWord) =>
    new WordReader(
      (await expand(storage, owner, word.text)).map((term) =>
        new TermReader(storage, owner, term, cursor.b)
      ),
    );
  const lead = await readerOf(driver);
  const others = await Promise.all(ordered.slice(1).map(readerOf));
  const matches: { seq: number; id: string; score: number }[] = [];
  let position: number | null = cursor.b;
  let scanned = 0;
  let exhausted = lead.empty || others.some((r) => r.empty);
  while (!exhausted && matches.length < WINDOW && scanned < SCAN_MAX) {
    // The driver's postings, newest first; the other words' postings are
    // read alongside (an intersection by seq), each block once.
    const batch: { seq: number; score: number }[] = [];
    while (batch.length < WINDOW && scanned < SCAN_MAX) {
      const c = await lead.next();
      if (!c) {
        exhausted = true;
        break;
      }
      scanned++;
      position = c.seq;
      let score = best(c.mask & driver.fields);
      for (let k = 0; score > 0 && k < others.length; k++) {
        const s = best(
          (await others[k].maskAt(c.seq)) & ordered[k + 1].fields,
        );
        score = s === 0 ? 0 : score + s;
      }
      if (score > 0) batch.push({ seq: c.seq, score });
    }
    // Deleted (or not indexed yet) copies have no index record: not found.
    const indexed = await storage.getMany<Indexed>(
      batch.map((c) => ftsKey.indexed(owner, c.seq)),
    );
    batch.forEach((c, i) => {
      const entry = indexed[i]?.value;
      if (!entry) return;
      if (query.folder !== undefined && entry.f !== query.folder) return;
      matches.push({ seq: c.seq, id: entry.id, score: c.score });
    });
  }
  const window = matches.slice(0, WINDOW);
  // A full window ends at its oldest match; the rest go to the next.
  if (matches.length > WINDOW) {
    position = window.at(-1)!.seq;
    exhausted = false;
  }
  window.sort((a, b) => b.score - a.score || b.seq - a.seq);
  const page = window.slice(cursor.s, cursor.s + query.limit);
  const records = await storage.getMany<StoredRecord>(
    page.map((m) => ["msg", owner, m.id]),
  );
  const messages = records.flatMap((r) => r ? [summaryOf(recordOf(r))] : []);
  let next: Cursor | null = null;
  if (cursor.s + query.limit < window.length) {
    next = { b: cursor.b, s: cursor.s + query.limit };
  } else if (!exhausted && position !== null) next = { b: position, s: 0 };
  return next ? { messages, cursor: encodeCursor(next) } : { messages };
}

/** The weight of the best field in `mask`, 0 when none. */
function best(mask: number): number {
  for (const [field, weight] of WEIGHT) if (mask & field) return weight;
  return 0;
}
