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

  /** Items due at `now` (at most `limit`), earliest first. */
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
    return (await Promise.all(reads)).flat().filter((entry) =>
      entry.value !== null
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

  /** Remove an item as read (done, bounced or dropped); concurrent removals share commits. */
  async remove(entry: OutboundEntry): Promise<void> {
    await this.#writes.write([], {
      mutations: 2,
      mutate: (op) =>
        op.delete(entry.key).delete(
          keys.outboundDue(entry.value.next_attempt, entry.value.id),
        ),
    });
  }
}
