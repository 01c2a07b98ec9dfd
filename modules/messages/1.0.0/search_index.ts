/**
 * Full-text search of a mailbox: an inverted index in module storage,
 * maintained at delivery, read newest first, never a scan of the mailbox.
 *
 * Keys (inside the module's namespace, beside mailbox.ts's):
 * - `["ftsq", owner, copyId]` -> 1: a copy still to index, written in the
 *   same atomic operation as the copy itself (so a crash between the copy's
 *   commit and its indexing loses nothing: the next search of that mailbox,
 *   or the indexer after a restart, indexes it)
 * - `["fts", owner, term, -dateMs, copyId]` -> field mask (which fields of
 *   the copy hold the term: {@link FIELD}); negated dates list newest first
 * - `["ftsd", owner, copyId]` -> {@link Indexed}: the copy's folder and terms
 *   (to check other words of a query, a folder, and to remove the postings)
 *
 * What is indexed: the subject, the sender (address and, for email, display
 * name), attachment names, and the body when the server can read it. An
 * end-to-end encrypted body is opaque and not indexed; its subject, sender
 * and attachment names are (the server stores them in the clear).
 *
 * Why keys in KV and not a search library (minisearch, flexsearch): those
 * hold the whole index in memory and persist it as one document; a mailbox
 * of a million messages would be read whole at start and rewritten on every
 * change. Postings as keys are written once, durable in the same database as
 * the copies, removed one by one, and a query reads only the newest postings
 * of its words (`list` from a key).
 *
 * @module
 */

import type { ModuleStorage, StorageKey } from "../../../workers/sdk/mod.ts";
import {
  type MessageRecord,
  readBody,
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
/** Terms a query word of 2 or more characters expands to (in key order). */
const EXPAND_MAX = 16;
/** Matches ranked together: a search's results are pages of windows of this many. */
const WINDOW = 200;
/** Postings one search call reads at most before it answers (with a cursor). */
const SCAN_MAX = 4000;
/** Postings read per word per round. */
const ROUND = 200;
/** Operations per atomic write of the indexer. */
const OPS_MAX = 600;

/** Keys of the index. */
export const ftsKey = {
  pending: (owner: string, id: string) => ["ftsq", owner, id],
  posting: (owner: string, term: string, date: number, id: string) => [
    "fts",
    owner,
    term,
    -date,
    id,
  ],
  indexed: (owner: string, id: string) => ["ftsd", owner, id],
};

/** What the index keeps of one copy. */
export interface Indexed {
  /** Its folder (updated by `move`). */
  f: string;
  /** Its date, ms. */
  d: number;
  /** Its terms, each prefixed by its field mask as one hex digit. */
  w: string[];
}

/** Words of a text: lowercase, accents removed, letters and digits. */
export function words(text: string): string[] {
  const found = text.normalize("NFKD").replace(/\p{M}+/gu, "").toLowerCase()
    .match(/[\p{L}\p{N}]+/gu) ?? [];
  return found.map((w) => w.slice(0, TERM_MAX));
}

/** The terms of a copy with their field masks. */
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

/** One in-process chain per mailbox, so two indexings of one copy do not race. */
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

/**
 * Index the copies of `owner`'s mailbox still marked to index. Each copy's
 * postings go in one atomic operation with the removal of its mark, checked
 * against the mark and the copy (a copy deleted or moved meanwhile is left
 * to the next attempt, which sees it as it is).
 */
export function indexPending(
  storage: ModuleStorage,
  owner: string,
): Promise<void> {
  return serialized(owner, async () => {
    for (let round = 0; round < 10_000; round++) {
      const page = await storage.list<number>(["ftsq", owner], { limit: 20 });
      if (page.items.length === 0) return;
      const ids = page.items.map((e) => String(e.key[2]));
      const records = await storage.getMany<MessageRecord>(
        ids.map((id) => ["msg", owner, id]),
      );
      let ops: Parameters<ModuleStorage["atomic"]>[0] = [];
      let progress = false;
      const flush = async () => {
        if (ops.length === 0) return;
        if (await storage.atomic(ops)) progress = true;
        ops = [];
      };
      for (let i = 0; i < ids.length; i++) {
        const mark = page.items[i];
        const record = records[i];
        if (!record) {
          // Deleted before it was indexed: only the mark is left.
          ops.push(
            { op: "check", key: mark.key, versionstamp: mark.versionstamp },
            { op: "delete", key: mark.key },
          );
          continue;
        }
        const copy = record.value;
        const body = copy.encrypted
          ? null
          : await readBody(storage, copy.message_id);
        const terms = termsOf(copy, body);
        const date = new Date(copy.date).getTime();
        const mine: typeof ops = [
          { op: "check", key: mark.key, versionstamp: mark.versionstamp },
          { op: "check", key: record.key, versionstamp: record.versionstamp },
          { op: "delete", key: mark.key },
          {
            op: "set",
            key: ftsKey.indexed(owner, copy.id),
            value: {
              f: copy.folder,
              d: date,
              w: [...terms].map(([t, m]) => m.toString(16) + t),
            } satisfies Indexed,
          },
        ];
        for (const [term, mask] of terms) {
          mine.push({
            op: "set",
            key: ftsKey.posting(owner, term, date, copy.id),
            value: mask,
            fresh: true,
          });
        }
        if (ops.length + mine.length > OPS_MAX) await flush();
        ops.push(...mine);
      }
      await flush();
      // Marks that failed their checks are read again; stop if none moved.
      if (!progress) {
        await new Promise((r) => setTimeout(r, 5));
        if (round > 20) return;
      }
    }
  });
}

/** Owners with copies to index, and the background loop that indexes them. */
const queued = new WeakMap<
  ModuleStorage,
  { owners: Set<string>; done: Promise<void> }
>();

/**
 * Index `owners`' new copies soon, off the delivery's path (their marks are
 * already stored: this only makes it happen before the next search asks).
 */
export function indexSoon(storage: ModuleStorage, owners: string[]): void {
  const running = queued.get(storage);
  if (running) {
    for (const o of owners) running.owners.add(o);
    return;
  }
  const set = new Set(owners);
  const run = async () => {
    await new Promise((r) => setTimeout(r, 0));
    while (set.size > 0) {
      const owner = set.values().next().value!;
      set.delete(owner);
      try {
        await indexPending(storage, owner);
      } catch {
        // Left marked: the next search of that mailbox indexes it.
      }
    }
    queued.delete(storage);
  };
  queued.set(storage, { owners: set, done: run() });
}

/** Resolves once the background indexing of `storage` has nothing left. */
export async function indexSettled(storage: ModuleStorage): Promise<void> {
  while (queued.get(storage)) await queued.get(storage)!.done;
}

/** Postings of the copies `removed` from `owner`'s mailbox (their `ftsd` already deleted): dropped. */
export async function dropPostings(
  storage: ModuleStorage,
  owner: string,
  removed: { id: string; indexed: Indexed }[],
): Promise<void> {
  let ops: Parameters<ModuleStorage["atomic"]>[0] = [];
  for (const { id, indexed } of removed) {
    for (const w of indexed.w) {
      ops.push({
        op: "delete",
        key: ftsKey.posting(owner, w.slice(1), indexed.d, id),
      });
      if (ops.length >= OPS_MAX) {
        await storage.atomic(ops);
        ops = [];
      }
    }
  }
  if (ops.length) await storage.atomic(ops);
}

/** One word of a query and the fields it must be in. */
export interface QueryWord {
  /** The word (a prefix of the terms it matches, exactly when 1 character). */
  text: string;
  /** Field mask: the word must be in one of these fields. */
  fields: number;
}

/** Where a search goes on: after position `b` (`[-dateMs, copyId]`), skipping `s` ranked matches. */
interface Cursor {
  b: [number, string] | null;
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
      c.s >= 0 &&
      (c.b === null ||
        (Array.isArray(c.b) && typeof c.b[0] === "number" &&
          typeof c.b[1] === "string" && c.b[1].length <= 64))
    ) return { b: c.b, s: c.s };
  } catch {
    // not a cursor
  }
  return null;
}

/** A cursor that is not one this search gave. */
export class BadCursor extends Error {}

function compare(a: [number, string], b: [number, string]): number {
  return a[0] - b[0] || (a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0);
}

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

/**
 * Search `owner`'s mailbox: copies holding every word (each a prefix),
 * in the fields asked, in `folder` when given. Results come ranked (the
 * fields the words are in: subject, sender, attachment name, body) in
 * windows of the {@link WINDOW} newest matches, newest first among equals;
 * `cursor` goes on. Reads only postings of the query's words, at most
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
  const terms = await expand(storage, owner, driver.text);
  const needIndexed = ordered.length > 1 || query.folder !== undefined;
  const matches: { at: [number, string]; score: number }[] = [];
  let position = cursor.b;
  let scanned = 0;
  let exhausted = terms.length === 0;
  while (!exhausted && matches.length < WINDOW && scanned < SCAN_MAX) {
    // The next ROUND postings after `position` over all the driver's terms.
    const pages = await Promise.all(
      terms.map((term) =>
        storage.list<number>(["fts", owner, term], {
          limit: ROUND,
          start: position
            ? ["fts", owner, term, position[0], position[1] + "\u0000"]
            : undefined,
        })
      ),
    );
    const round = new Map<string, { at: [number, string]; mask: number }>();
    for (const page of pages) {
      for (const e of page.items) {
        const at: [number, string] = [Number(e.key[3]), String(e.key[4])];
        const seen = round.get(at[1]);
        if (seen) seen.mask |= e.value;
        else round.set(at[1], { at, mask: e.value });
      }
    }
    const candidates = [...round.values()].sort((a, b) => compare(a.at, b.at))
      .slice(0, ROUND);
    exhausted = pages.every((p) => p.items.length < ROUND) &&
      round.size <= ROUND;
    if (candidates.length === 0) {
      exhausted = true;
      break;
    }
    position = candidates.at(-1)!.at;
    scanned += candidates.length;
    const indexed = needIndexed
      ? await storage.getMany<Indexed>(
        candidates.map((c) => ftsKey.indexed(owner, c.at[1])),
      )
      : [];
    candidates.forEach((c, i) => {
      let score = best(c.mask & driver.fields);
      if (score === 0) return;
      if (needIndexed) {
        const entry = indexed[i]?.value;
        if (!entry) return;
        if (query.folder !== undefined && entry.f !== query.folder) return;
        for (const word of ordered.slice(1)) {
          let mask = 0;
          for (const w of entry.w) {
            const term = w.slice(1);
            if (
              word.text.length < 2
                ? term === word.text
                : term.startsWith(word.text)
            ) mask |= parseInt(w[0], 16);
          }
          const s = best(mask & word.fields);
          if (s === 0) return;
          score += s;
        }
      }
      matches.push({ at: c.at, score });
    });
  }
  const window = matches.slice(0, WINDOW);
  // A window that filled up ends at its oldest match; the rest go to the next.
  if (matches.length > WINDOW || (matches.length === WINDOW && !exhausted)) {
    position = window.at(-1)!.at;
    exhausted = false;
  }
  window.sort((a, b) => b.score - a.score || compare(a.at, b.at));
  const page = window.slice(cursor.s, cursor.s + query.limit);
  const records = await storage.getMany<MessageRecord>(
    page.map((m) => ["msg", owner, m.at[1]]),
  );
  const messages = records.flatMap((r) => r ? [summaryOf(r.value)] : []);
  let next: Cursor | null = null;
  if (cursor.s + query.limit < window.length) {
    next = { b: cursor.b, s: cursor.s + query.limit };
  } else if (!exhausted && position) next = { b: position, s: 0 };
  return next ? { messages, cursor: encodeCursor(next) } : { messages };
}

/** The weight of the best field in `mask`, 0 when none. */
function best(mask: number): number {
  for (const [field, weight] of WEIGHT) if (mask & field) return weight;
  return 0;
}
