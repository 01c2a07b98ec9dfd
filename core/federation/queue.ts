/**
 * The outbound queue worker: delivers queued payloads to their domains'
 * servers, retries with exponential backoff and jitter (capped) up to a
 * lifetime, bounces permanent failures at once and expired items at the end,
 * and keeps one dead destination from holding up the others.
 *
 * An item leaves the queue only after the remote server answered for every
 * recipient (or the item bounced); the remote side is idempotent by delivery
 * id, so a crash between its answer and our delete delivers nothing twice.
 *
 * @module
 */

import type { GroupCommit } from "../../kv/group_commit.ts";
import type { Logger } from "../log/mod.ts";
import { ErrorCode, ProtocolError } from "../protocol/mod.ts";
import type { PeerClient, PeerPool } from "./peers.ts";
import type { Failure, RecipientResult } from "./delivery.ts";
import type { OutboundItem } from "./outbox.ts";

/** Per-recipient and session error codes that no retry can fix. */
const PERMANENT = new Set<number>([
  ErrorCode.INVALID_ADDRESS,
  ErrorCode.NOT_FOUND,
  ErrorCode.LIMIT_EXCEEDED,
  ErrorCode.UNKNOWN_DOMAIN,
  ErrorCode.S2S_NOT_DELEGATED,
  ErrorCode.S2S_WRONG_DESTINATION,
  ErrorCode.S2S_FROM_MISMATCH,
  ErrorCode.NO_AMTP_RECORD,
]);

/** Deliveries in flight to one domain at a time. */
const PER_DOMAIN = 16;

/** Options of {@link OutboundQueue}. */
export interface QueueOptions {
  /** KV holding the queue. */
  kv: Deno.Kv;
  /** Commits of the queue's writes, grouped with concurrent ones. */
  writes: GroupCommit;
  /** Sessions with peers. */
  pool: PeerPool;
  /** Logger. */
  log: Logger;
  /** Milliseconds an item may wait before it bounces. */
  lifetimeMs: number;
  /** First retry delay in milliseconds (doubles per attempt). */
  retryBaseMs: number;
  /** Longest retry delay in milliseconds. */
  retryMaxMs: number;
  /** Hand a bounce to the sending module. */
  bounce: (item: OutboundItem, failures: Failure[]) => Promise<void>;
  /** Milliseconds between scans of the queue. */
  intervalMs?: number;
}

function senderDomain(from: string): string {
  return from.slice(from.lastIndexOf("@") + 1);
}

/** Delivers the outbound queue. */
export class OutboundQueue {
  readonly #options: QueueOptions;
  readonly #dead = new Map<string, number>();
  #timer?: ReturnType<typeof setTimeout>;
  #running?: Promise<void>;
  #stopped = false;
  #again = false;

  /** Create the worker; {@link start} runs it. */
  constructor(options: QueueOptions) {
    this.#options = options;
  }

  /** Start scanning the queue. */
  start(): void {
    this.#schedule(0);
  }

  /** Scan soon (an item was queued). */
  kick(): void {
    if (this.#running) this.#again = true;
    else this.#schedule(0);
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      this.#running = this.runOnce().catch((error) => {
        this.#options.log.error("outbound_scan_failed", {
          error: String(error),
        });
      }).finally(() => {
        this.#running = undefined;
        this.#schedule(this.#again ? 0 : this.#options.intervalMs ?? 1000);
        this.#again = false;
      });
    }, ms);
  }

  /** Stop scanning; waits for a scan in progress. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  /** Items in the queue, oldest first. */
  async list(limit = 100, domain?: string): Promise<OutboundItem[]> {
    const items: OutboundItem[] = [];
    for await (
      const entry of this.#options.kv.list<OutboundItem>({
        prefix: ["outbound"],
      })
    ) {
      if (domain && entry.value.domain !== domain) continue;
      items.push(entry.value);
    }
    return items.sort((a, b) => a.created.getTime() - b.created.getTime())
      .slice(0, limit);
  }

  /** Try an item at once; false when there is none. */
  async retry(id: string): Promise<boolean> {
    const entry = await this.#options.kv.get<OutboundItem>(["outbound", id]);
    if (!entry.value) return false;
    this.#dead.delete(entry.value.domain);
    await this.#options.kv.atomic().check(entry).set(entry.key, {
      ...entry.value,
      next_attempt: Date.now(),
    }).commit();
    this.kick();
    return true;
  }

  /** Drop an item without delivering or bouncing it; false when there is none. */
  async remove(id: string): Promise<boolean> {
    const entry = await this.#options.kv.get<OutboundItem>(["outbound", id]);
    if (!entry.value) return false;
    await this.#options.kv.atomic().delete(entry.key).delete([
      "outbound_by_domain",
      entry.value.domain,
      id,
    ]).commit();
    return true;
  }

  /** Deliver every due item once. */
  async runOnce(): Promise<void> {
    const now = Date.now();
    const due = new Map<string, Deno.KvEntry<OutboundItem>[]>();
    for await (
      const entry of this.#options.kv.list<OutboundItem>({
        prefix: ["outbound"],
      })
    ) {
      const item = entry.value;
      if (item.next_attempt > now) continue;
      const deadUntil = this.#dead.get(item.domain) ?? 0;
      if (
        deadUntil > now &&
        now - item.created.getTime() <= this.#options.lifetimeMs
      ) continue;
      due.set(item.domain, [...(due.get(item.domain) ?? []), entry]);
    }
    // Domains in parallel (a few at a time); one slow domain does not hold the rest.
    const domains = [...due.keys()];
    const workers = Array.from(
      { length: Math.min(8, domains.length) },
      async () => {
        while (domains.length) {
          const domain = domains.shift()!;
          // Several deliveries in flight per domain: the peer session
          // multiplexes requests, so a round trip does not wait for another.
          const entries = due.get(domain)!;
          await Promise.all(
            Array.from(
              { length: Math.min(PER_DOMAIN, entries.length) },
              async () => {
                while (entries.length) await this.#deliver(entries.shift()!);
              },
            ),
          );
        }
      },
    );
    await Promise.all(workers);
  }

  async #deliver(entry: Deno.KvEntry<OutboundItem>): Promise<void> {
    const item = entry.value;
    const now = Date.now();
    if (now - item.created.getTime() > this.#options.lifetimeMs) {
      const reason = `not delivered within ${
        Math.round(this.#options.lifetimeMs / 1000)
      } s: ${item.last_error || "no attempt succeeded"}`;
      await this.#finish(
        entry,
        item.to.map((address) => ({
          address,
          error: ErrorCode.REMOTE_UNREACHABLE,
          message: reason,
        })),
      );
      return;
    }
    let results: RecipientResult[];
    let session: PeerClient | undefined;
    try {
      session = await this.#options.pool.session(
        senderDomain(item.from),
        item.domain,
      );
      const answer = await session.call<{ recipients: typeof results }>(
        "s2s_deliver",
        {
          module: item.module,
          from: item.from,
          to: item.to,
          id: item.delivery_id,
          payload: item.payload as Record<string, unknown>,
        },
      );
      results = answer.recipients;
      this.#dead.delete(item.domain);
    } catch (error) {
      // No answer (a timeout, a connection gone: the peer may have died
      // without closing it): the next attempt connects afresh instead of
      // waiting on the same dead connection.
      if (session && !(error instanceof ProtocolError)) {
        this.#options.pool.forget(session);
      }
      const code = error instanceof ProtocolError
        ? error.code
        : ErrorCode.REMOTE_UNREACHABLE;
      const transient = error instanceof ProtocolError
        ? (error.data as { transient?: boolean })?.transient === true
        : true;
      const message = (error as Error).message;
      if (PERMANENT.has(code) && !transient) {
        await this.#finish(
          entry,
          item.to.map((address) => ({ address, error: code, message })),
        );
        return;
      }
      await this.#postpone(entry, item.to, message);
      return;
    }
    const failures: Failure[] = [];
    const retry: string[] = [];
    for (const address of item.to) {
      const result = results.find((r) => r.address === address);
      if (result?.status === "delivered") continue;
      const code = result?.error ?? ErrorCode.INTERNAL;
      if (PERMANENT.has(code)) {
        failures.push({
          address,
          error: code,
          message: result?.message ?? "refused",
        });
      } else retry.push(address);
    }
    if (retry.length === 0) {
      await this.#finish(entry, failures);
    } else {
      if (failures.length) await this.#options.bounce(item, failures);
      const reasons = results.filter((r) => retry.includes(r.address)).map((
        r,
      ) => r.message).join("; ");
      await this.#postpone(entry, retry, reasons || "temporary failure");
    }
  }

  async #finish(
    entry: Deno.KvEntry<OutboundItem>,
    failures: Failure[],
  ): Promise<void> {
    const item = entry.value;
    if (failures.length > 0) {
      try {
        await this.#options.bounce(item, failures);
      } catch (error) {
        // The bounce could not be stored: keep the item and try later.
        await this.#postpone(
          entry,
          item.to,
          `bounce failed: ${(error as Error).message}`,
        );
        return;
      }
      this.#options.log.info("outbound_bounced", {
        id: item.id,
        domain: item.domain,
        failed: failures.length,
      });
    } else {
      this.#options.log.info("outbound_delivered", {
        id: item.id,
        domain: item.domain,
        attempts: item.attempts + 1,
      });
    }
    // Deliveries finishing together leave the queue in one commit.
    await this.#options.writes.write([], {
      mutations: 2,
      mutate: (op) =>
        op.delete(entry.key).delete([
          "outbound_by_domain",
          item.domain,
          item.id,
        ]),
    });
  }

  async #postpone(
    entry: Deno.KvEntry<OutboundItem>,
    to: string[],
    reason: string,
  ): Promise<void> {
    const item = entry.value;
    const attempts = item.attempts + 1;
    const base = Math.min(
      this.#options.retryMaxMs,
      this.#options.retryBaseMs * 2 ** (attempts - 1),
    );
    const delay = Math.round(base * (0.5 + Math.random() / 2));
    const next = {
      ...item,
      to,
      attempts,
      next_attempt: Date.now() + delay,
      last_error: reason.slice(0, 500),
    };
    this.#dead.set(item.domain, next.next_attempt);
    await this.#options.kv.atomic().check(entry).set(entry.key, next).commit();
    this.#options.log.info("outbound_deferred", {
      id: item.id,
      domain: item.domain,
      attempts,
      retry_in_ms: delay,
      reason: next.last_error,
    });
  }
}
