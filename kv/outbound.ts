/**
 * The outbound queue's records: module payloads for addresses on other
 * servers, one item per destination domain, stored before the sender's
 * request is acknowledged, and an index of their due times so that the queue
 * reads only what is due.
 *
 * Every write of an item moves its index entry in the same atomic
 * operation: the index never names an item that is not due then, and never
 * misses one.
 *
 * @module
 */

import type { KvGroupCommit } from "./group_commit.ts";
import { keys } from "./records.ts";

/** One queued delivery to one remote domain. */
export interface OutboundItem {
  /** `<module>:<delivery id>:<domain>`. */
  id: string;
  /** Module whose payload it is. */
  module: string;
  /** Sender address (a local user). */
  from: string;
  /** Recipient addresses, all on `domain`. */
  to: string[];
  /** Destination domain. */
  domain: string;
  /** Delivery id chosen by the module (idempotency across retries). */
  delivery_id: string;
  /** The module's payload. */
  payload: unknown;
  /** Blobs the receiving server must hold first: `{id, sha256, size}` (core/federation/blobs.ts). */
  blobs?: { id: string; sha256: string; size: number }[];
  /** When it was queued. */
  created: Date;
  /** Attempts so far. */
  attempts: number;
  /** Epoch milliseconds of the next attempt. */
  next_attempt: number;
  /** Last failure. */
  last_error: string;
  /**
   * The instance delivering it now, until when (epoch ms): taken with
   * {@link OutboundStore.lease}; meanwhile the item is due at `until`, so
   * that another instance takes it over if this one dies.
   */
  lease?: { holder: string; until: number };
}

/** An item as read, with what a later write must check. */
export type OutboundEntry = Deno.KvEntry<OutboundItem>;

/** Items read per page of the due index. */
const DUE_PAGE = 500;

/** The outbound queue in KV. */
export class OutboundStore {
  readonly #kv: Deno.Kv;
  readonly #writes: KvGroupCommit;

  /** Wrap an open KV; writes that come together share commits through `writes`. */
  constructor(kv: Deno.Kv, writes: KvGroupCommit) {
    this.#kv = kv;
    this.#writes = writes;
  }

  /** Store a new item, unless one with its id is queued already; false then. */
  add(item: OutboundItem): Promise<boolean> {
    return this.#writes.write(
      [{ key: keys.outbound(item.id), versionstamp: null }],
      {
        mutations: 2,
        mutate: (op) =>
          op.set(keys.outbound(item.id), item).set(
            keys.outboundDue(item.next_attempt, item.id),
            true,
          ),
      },
    );
  }

  /** One item. */
  async get(id: string): Promise<OutboundEntry | undefined> {
    const entry = await this.#kv.get<OutboundItem>(keys.outbound(id));
    return entry.value ? entry as OutboundEntry : undefined;
  }

  /**
   * Items due at `now` (at most `limit`), earliest first: listed from the
   * due index, then read, each as it is stored at the read.
   */
  async due(now: number, limit = DUE_PAGE): Promise<OutboundEntry[]> {
    const ids: string[] = [];
    for await (
      const entry of this.#kv.list({
        start: keys.outboundDue(-Infinity),
        end: keys.outboundDue(now + 1),
      }, { limit })
    ) ids.push(String(entry.key[2]));
    // Ten keys a read (KV's bound), the reads in parallel.
    const reads: Promise<Deno.KvEntryMaybe<OutboundItem>[]>[] = [];
    for (let i = 0; i < ids.length; i += 10) {
      reads.push(
        this.#kv.getMany<OutboundItem[]>(
          ids.slice(i, i + 10).map((id) => keys.outbound(id)),
        ),
      );
    }
    // An item written between the two reads (another instance leased or
    // retried it) is read as it is now, with a versionstamp a lease would
    // check successfully: it is due only if it still says so.
    return (await Promise.all(reads)).flat().filter((entry) =>
      entry.value !== null && entry.value.next_attempt <= now
    ) as OutboundEntry[];
  }

  /** When the earliest item is due, or undefined when the queue is empty. */
  async nextDue(): Promise<number | undefined> {
    for await (
      const entry of this.#kv.list({ prefix: keys.outboundDue() }, {
        limit: 1,
      })
    ) return Number(entry.key[1]);
    return undefined;
  }

  /**
   * How many items wait (counting at most `limit`) and when the oldest was
   * queued (epoch milliseconds), for the metrics.
   */
  async stats(limit = 10_000): Promise<{ items: number; oldest?: number }> {
    let items = 0;
    let oldest: number | undefined;
    for await (
      const entry of this.#kv.list<OutboundItem>({ prefix: keys.outbounds() }, {
        limit,
      })
    ) {
      items++;
      const created = entry.value.created.getTime();
      if (oldest === undefined || created < oldest) oldest = created;
    }
    return { items, oldest };
  }

  /** Every item, oldest first, at most `limit` (`domain`: of that one only). */
  async list(limit: number, domain?: string): Promise<OutboundItem[]> {
    const items: OutboundItem[] = [];
    for await (
      const entry of this.#kv.list<OutboundItem>({ prefix: keys.outbounds() })
    ) {
      if (domain && entry.value.domain !== domain) continue;
      items.push(entry.value);
    }
    return items.sort((a, b) => a.created.getTime() - b.created.getTime())
      .slice(0, limit);
  }

  /**
   * Replace an item as read (`entry`) by `next`, moving its due entry; false
   * when the item changed since it was read.
   */
  async update(entry: OutboundEntry, next: OutboundItem): Promise<boolean> {
    const result = await this.#kv.atomic().check(entry)
      .set(entry.key, next)
      .delete(keys.outboundDue(entry.value.next_attempt, entry.value.id))
      .set(keys.outboundDue(next.next_attempt, next.id), true)
      .commit();
    return result.ok;
  }

  /**
   * Take `entries` (as read from {@link due}) for delivery by `holder` until
   * `until`: each, unchanged since it was read, is moved to be due at
   * `until` with the lease in the same atomic operation, so two instances
   * never both take it, and a crashed holder's items fall due again when its
   * leases expire. Returns the entries taken, as now stored.
   */
  async lease(
    entries: OutboundEntry[],
    holder: string,
    until: number,
  ): Promise<OutboundEntry[]> {
    const taken: OutboundEntry[] = [];
    const leased = (e: OutboundEntry): OutboundItem => ({
      ...e.value,
      lease: { holder, until },
      next_attempt: until,
    });
    const take = (op: Deno.AtomicOperation, e: OutboundEntry) =>
      op.check(e).set(e.key, leased(e))
        .delete(keys.outboundDue(e.value.next_attempt, e.value.id))
        .set(keys.outboundDue(until, e.value.id), true);
    // Up to 24 items per commit (each one check of KV's 100); when one was
    // taken by another instance meanwhile, each of the group on its own.
    for (let i = 0; i < entries.length; i += 24) {
      const group = entries.slice(i, i + 24);
      const op = this.#kv.atomic();
      for (const e of group) take(op, e);
      const result = await op.commit();
      const won = result.ok
        ? group.map((e) => ({ e, versionstamp: result.versionstamp }))
        : (await Promise.all(group.map(async (e) => {
          const one = await take(this.#kv.atomic(), e).commit();
          return one.ok ? { e, versionstamp: one.versionstamp } : null;
        }))).filter((x) => x !== null);
      for (const { e, versionstamp } of won) {
        taken.push({ ...e, value: leased(e), versionstamp });
      }
    }
    return taken;
  }

  /**
   * Make the items leased by `holder` due at `now`: an instance restarted
   * under the same name takes back at once what it held when it stopped.
   */
  async reclaim(holder: string, now: number): Promise<number> {
    let reclaimed = 0;
    for await (
      const entry of this.#kv.list<OutboundItem>({ prefix: keys.outbounds() })
    ) {
      if (entry.value.lease?.holder !== holder) continue;
      const { lease: _, ...item } = entry.value;
      if (await this.update(entry, { ...item, next_attempt: now })) {
        reclaimed++;
      }
    }
    return reclaimed;
  }

  /**
   * Remove an item as read (done, bounced or dropped); concurrent removals
   * share commits. Changed since (another instance took it over after this
   * one's lease expired): the item as it is now goes, with its due entry.
   */
  async remove(entry: OutboundEntry): Promise<void> {
    let current: OutboundEntry | undefined = entry;
    for (let attempt = 0; current && attempt < 10; attempt++) {
      const { key, value } = current;
      const done = await this.#writes.write(
        [{ key, versionstamp: current.versionstamp }],
        {
          mutations: 2,
          mutate: (op) =>
            op.delete(key).delete(
              keys.outboundDue(value.next_attempt, value.id),
            ),
        },
      );
      if (done) return;
      current = await this.get(entry.value.id);
    }
  }
}
