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
 * It reads only what is due, from the index of due times (kv/outbound.ts),
 * and sleeps until the earliest due time, at most `intervalMs` (items queued
 * by another process), or until {@link OutboundQueue.kick} (an item queued
 * here, or retried by an admin).
 *
 * @module
 */

import { currentTraceparent, inSpan, SpanKind } from "../trace/mod.ts";
import type {
  OutboundEntry,
  OutboundItem,
  OutboundStore,
} from "../../kv/outbound.ts";
import type { Logger } from "../log/mod.ts";
import { ErrorCode, ProtocolError } from "../protocol/mod.ts";
import type { Failure, RecipientResult } from "./delivery.ts";
import type { EmailRoute } from "./email_route.ts";
import type { PeerClient } from "./peers.ts";

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
  ErrorCode.REMOTE_REFUSED,
  ErrorCode.EMAIL_NOT_ENCRYPTED,
]);

/** Requests in flight to one domain at a time. */
const PER_DOMAIN = 16;
/**
 * Items in flight to one domain at a time, batched or not: a receiver under
 * load answers a request once all its items are stored, and a request
 * without an answer within `AMTP_FEDERATION_TIMEOUT` is tried again.
 */
const IN_FLIGHT_ITEMS = 16;
/** Payload bytes of one batch, about (frames are at most 16 MiB; a single item may be larger). */
const BATCH_BYTES = 1024 * 1024;
/** At most this many request timeouts for a batch to be answered. */
const BATCH_TIMEOUT_FACTOR = 3;
/** How long a destination that does not know `s2s_deliver_batch` gets single deliveries. */
const NO_BATCH_MS = 3_600_000;
/**
 * How long a destination that left a batch unanswered (a timeout, a
 * connection lost) gets single deliveries: a loaded receiver is not handed
 * the same batch again, and one slow item does not hold up the others.
 */
const BATCH_FAILED_MS = 600_000;

/** Sessions with other servers, as the queue uses them (peers.ts, PeerPool). */
export interface PeerSessions {
  /** An authenticated session from `domain`'s server to one of `destination`'s. */
  session(
    domain: string,
    destination: string,
  ): Promise<Pick<PeerClient, "call">>;
  /** Drop a session that did not answer (the next attempt connects afresh). */
  forget(session: Pick<PeerClient, "call">): void;
}

/** Options of {@link OutboundQueue}. */
export interface QueueOptions {
  /** The queue's records. */
  store: OutboundStore;
  /** Sessions with peers (the AMTP route). */
  pool: PeerSessions;
  /** The email route, for domains without `amtp-servers` (none: they bounce). */
  email?: Pick<EmailRoute, "available" | "deliver">;
  /** Logger. */
  log: Logger;
  /** Milliseconds an item may wait before it bounces. */
  lifetimeMs: number;
  /** First retry delay in milliseconds (doubles per attempt). */
  retryBaseMs: number;
  /** Longest retry delay in milliseconds. */
  retryMaxMs: number;
  /** Before `s2s_deliver` of an item with blobs: send them in the same session (blobs.ts). */
  beforeDeliver?: (
    session: Pick<PeerClient, "call">,
    item: OutboundItem,
  ) => Promise<void>;
  /** Hand a bounce to the sending module. */
  bounce: (item: OutboundItem, failures: Failure[]) => Promise<void>;
  /** Longest sleep in milliseconds between looks at the due index (default 1000). */
  intervalMs?: number;
  /** Clock in epoch milliseconds (tests move it). */
  now?: () => number;
  /** Random numbers in [0, 1) for the retry jitter (tests fix them). */
  random?: () => number;
  /**
   * Items per `s2s_deliver_batch` for a backlog (more due for a domain than
   * may be in flight); 1, the default, sends every item alone. Off by
   * default: under load the kill test lost items to batches (they timed out
   * and expired; docs/PERFORMANCE.md).
   */
  batch?: number;
  /** Told of each attempt's outcome per recipient (metrics). */
  observe?: (outcome: DeliveryOutcome, recipients: number) => void;
  /**
   * This instance's name in the leases it takes, the same across its
   * restarts (default: its process id and a random part).
   */
  holder?: string;
  /**
   * Milliseconds an item taken for delivery stays this instance's: past
   * them another instance sharing the database takes it over (default
   * 120,000; longer than one attempt takes).
   */
  leaseMs?: number;
  /** Run `fn` after `ms`; returns a cancel function (default: setTimeout; tests drive it). */
  schedule?: (fn: () => void, ms: number) => () => void;
}

/** What became of recipients of a queued item after one attempt. */
export type DeliveryOutcome = "delivered" | "bounced" | "deferred";

/** Bytes of an item's payload, about (its body and subject). */
function payloadBytes(item: OutboundItem): number {
  const p = (item.payload ?? {}) as { body?: unknown; subject?: unknown };
  const body = p.body instanceof Uint8Array
    ? p.body.byteLength
    : typeof p.body === "string"
    ? p.body.length * 3
    : 0;
  return 1024 + body + String(p.subject ?? "").length * 3;
}

function senderDomain(from: string): string {
  return from.slice(from.lastIndexOf("@") + 1);
}

/** Delivers the outbound queue. */
export class OutboundQueue {
  readonly #options: QueueOptions;
  readonly #store: OutboundStore;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #holder: string;
  readonly #leaseMs: number;
  /** Domains whose servers are down, until when. */
  readonly #dead = new Map<string, number>();
  /** Domains whose servers do not know `s2s_deliver_batch`, until when. */
  readonly #single = new Map<string, number>();
  #timer?: ReturnType<typeof setTimeout>;
  #running?: Promise<void>;
  #started = false;
  #stopped = false;
  #again = false;

  /** Create the worker; {@link start} runs it. */
  constructor(options: QueueOptions) {
    this.#options = options;
    this.#store = options.store;
    this.#now = options.now ?? Date.now;
    this.#random = options.random ?? Math.random;
    this.#holder = options.holder ??
      `${Deno.pid}:${crypto.randomUUID().slice(0, 8)}`;
    this.#leaseMs = options.leaseMs ?? 120_000;
  }

  /** Start delivering, first taking back what this instance's name held (a restart). */
  start(): void {
    this.#started = true;
    this.#running = this.#store.reclaim(this.#holder, this.#now()).then(
      () => {},
      (error) =>
        this.#options.log.error("outbound_reclaim_failed", {
          error: String(error),
        }),
    ).finally(() => {
      this.#running = undefined;
      this.#schedule(0);
    });
  }

  /** Look at the queue soon (an item was queued or retried); nothing before {@link start}. */
  kick(): void {
    if (!this.#started) return;
    if (this.#running) this.#again = true;
    else this.#schedule(0);
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => {
      let next = Infinity;
      this.#running = this.runOnce().then((wake) => {
        next = wake;
      }).catch(
        (error) => {
          this.#options.log.error("outbound_scan_failed", {
            error: String(error),
          });
        },
      ).finally(() => {
        this.#running = undefined;
        const longest = this.#options.intervalMs ?? 1000;
        const sleep = Math.min(longest, Math.max(0, next - this.#now()));
        this.#schedule(this.#again ? 0 : sleep);
        this.#again = false;
      });
    }, ms);
  }

  /** Stop delivering; waits for a run in progress. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#running;
  }

  /** Items in the queue, oldest first. */
  list(limit = 100, domain?: string): Promise<OutboundItem[]> {
    return this.#store.list(limit, domain);
  }

  /** Try an item at once; false when there is none. */
  async retry(id: string): Promise<boolean> {
    const entry = await this.#store.get(id);
    if (!entry) return false;
    this.#dead.delete(entry.value.domain);
    await this.#store.update(entry, {
      ...entry.value,
      next_attempt: this.#now(),
    });
    this.kick();
    return true;
  }

  /** Drop an item without delivering or bouncing it; false when there is none. */
  async remove(id: string): Promise<boolean> {
    const entry = await this.#store.get(id);
    if (!entry) return false;
    await this.#store.remove(entry);
    return true;
  }

  /**
   * Deliver every due item once; resolves to when the next item is due
   * (Infinity: none is queued).
   */
  async runOnce(): Promise<number> {
    const now = this.#now();
    const ready: OutboundEntry[] = [];
    for (const entry of await this.#store.due(now)) {
      const item = entry.value;
      const deadUntil = this.#dead.get(item.domain) ?? 0;
      if (
        deadUntil > now &&
        now - item.created.getTime() <= this.#options.lifetimeMs
      ) {
        // Its domain's servers are down: it waits for the domain's retry.
        await this.#store.update(entry, { ...item, next_attempt: deadUntil });
        continue;
      }
      ready.push(entry);
    }
    // Each item is delivered by the one instance that takes its lease
    // (several instances may share the database).
    const entries = await this.#store.lease(
      ready,
      this.#holder,
      now + this.#leaseMs,
    );
    const due = new Map<string, OutboundEntry[]>();
    for (const entry of entries) {
      const item = entry.value;
      due.set(item.domain, [...(due.get(item.domain) ?? []), entry]);
    }
    // Domains in parallel (a few at a time); one slow domain does not hold the rest.
    const domains = [...due.keys()];
    const workers = Array.from(
      { length: Math.min(8, domains.length) },
      async () => {
        while (domains.length) {
          const domain = domains.shift()!;
          // Several requests in flight per domain (the peer session
          // multiplexes them, so a round trip does not wait for another),
          // each carrying several items when the items allow.
          const batches = this.#batches(domain, due.get(domain)!);
          const largest = Math.max(...batches.map((b) => b.length));
          const slots = Math.max(1, Math.floor(IN_FLIGHT_ITEMS / largest));
          await Promise.all(
            Array.from(
              { length: Math.min(PER_DOMAIN, slots, batches.length) },
              async () => {
                while (batches.length) {
                  const batch = batches.shift()!;
                  if (batch.length === 1) await this.#deliver(batch[0]);
                  else await this.#deliverBatch(batch);
                }
              },
            ),
          );
        }
      },
    );
    await Promise.all(workers);
    return await this.#store.nextDue() ?? Infinity;
  }

  /**
   * The due items of a domain in requests: beyond {@link IN_FLIGHT_ITEMS},
   * items without attachments from
   * the same sending domain and module go together (at most
   * `batch`, about {@link BATCH_BYTES}); the others alone.
   */
  #batches(domain: string, entries: OutboundEntry[]): OutboundEntry[][] {
    // As many items as may be in flight go one per request, as they come;
    // a backlog larger than that (after an outage, under load) in batches.
    const most = Math.min(32, this.#options.batch ?? 1);
    if (
      most <= 1 || entries.length <= IN_FLIGHT_ITEMS ||
      (this.#single.get(domain) ?? 0) > this.#now()
    ) {
      return entries.map((e) => [e]);
    }
    const alone: OutboundEntry[][] = [];
    const groups = new Map<string, OutboundEntry[]>();
    for (const entry of entries) {
      const item = entry.value;
      if (item.blobs?.length) {
        alone.push([entry]);
        continue;
      }
      const group = `${senderDomain(item.from)}\n${item.module}`;
      groups.set(group, [...(groups.get(group) ?? []), entry]);
    }
    const out: OutboundEntry[][] = [...alone];
    for (const group of groups.values()) {
      // As few requests as the batch size allows, of even sizes (a batch's
      // items are delivered side by side at the receiver).
      const size = Math.ceil(group.length / Math.ceil(group.length / most));
      let batch: OutboundEntry[] = [];
      let bytes = 0;
      for (const entry of group) {
        const b = payloadBytes(entry.value);
        if (batch.length >= size || (batch.length && bytes + b > BATCH_BYTES)) {
          out.push(batch);
          batch = [];
          bytes = 0;
        }
        batch.push(entry);
        bytes += b;
      }
      if (batch.length) out.push(batch);
    }
    return out;
  }

  /**
   * Several items in one `s2s_deliver_batch`, each then settled as after
   * its own attempt. A destination that does not know the command gets
   * them one by one (and single deliveries for an hour).
   */
  #deliverBatch(entries: OutboundEntry[]): Promise<void> {
    return inSpan("amtp.delivery", {
      kind: SpanKind.CLIENT,
      attributes: {
        "amtp.domain": entries[0].value.domain,
        "amtp.module": entries[0].value.module,
        "amtp.deliveries": entries.length,
      },
    }, async () => {
      const kept = await this.#keep(entries);
      const now = this.#now();
      const live = kept.filter((e) => !this.#expired(e.value, now));
      // Settled side by side: their queue writes share commits.
      await Promise.all(
        kept.filter((e) => !live.includes(e)).map((e) => this.#expire(e)),
      );
      if (live.length === 0) return;
      let answers: ({ recipients: RecipientResult[] } | {
        error: number;
        message?: string;
      })[];
      try {
        answers = await this.#amtpBatch(live.map((e) => e.value));
        this.#dead.delete(live[0].value.domain);
      } catch (error) {
        const unknown = error instanceof ProtocolError &&
          error.code === ErrorCode.UNKNOWN_COMMAND;
        const noRecord = error instanceof ProtocolError &&
          error.code === ErrorCode.NO_AMTP_RECORD;
        if (unknown || noRecord) {
          // One by one: the command is unknown there, or the domain's
          // mail goes another route (email).
          if (unknown) {
            this.#single.set(live[0].value.domain, now + NO_BATCH_MS);
          }
          await Promise.all(live.map((entry) => this.#deliver(entry)));
          return;
        }
        if (!(error instanceof ProtocolError)) {
          this.#single.set(live[0].value.domain, now + BATCH_FAILED_MS);
        }
        await Promise.all(live.map((entry) => this.#failed(entry, error)));
        return;
      }
      await Promise.all(live.map(async (entry, i) => {
        const answer = answers[i] as unknown;
        const recipients = typeof answer === "object" && answer !== null
          ? (answer as { recipients?: unknown }).recipients
          : undefined;
        if (Array.isArray(recipients)) {
          await this.#settle(entry, recipients as RecipientResult[]);
        } else {
          // The peer's answer is not trusted to be well formed.
          const bad = (answer ?? {}) as { error?: unknown; message?: unknown };
          const code = typeof bad.error === "number"
            ? bad.error
            : ErrorCode.INTERNAL;
          await this.#failed(
            entry,
            new ProtocolError(
              code as typeof ErrorCode.INTERNAL,
              typeof bad.message === "string"
                ? bad.message.slice(0, 500)
                : "no answer for this delivery",
            ),
          );
        }
      }));
    });
  }

  /** Deliver several items to one of the domain's AMTP servers in one request. */
  async #amtpBatch(
    items: OutboundItem[],
  ): Promise<
    ({ recipients: RecipientResult[] } | { error: number; message?: string })[]
  > {
    let session: Pick<PeerClient, "call"> | undefined;
    try {
      session = await this.#options.pool.session(
        senderDomain(items[0].from),
        items[0].domain,
      );
      const answer = await session.call<{
        results: (
          | { recipients: RecipientResult[] }
          | { error: number; message?: string }
        )[];
      }>("s2s_deliver_batch", {
        deliveries: items.map((item) => ({
          module: item.module,
          from: item.from,
          to: item.to,
          id: item.delivery_id,
          payload: item.payload as Record<string, unknown>,
        })),
        traceparent: currentTraceparent(),
        // The receiver stores a batch's items side by side: it takes longer
        // than one item, not as long as all of them one after another.
      }, { timeoutFactor: Math.min(items.length, BATCH_TIMEOUT_FACTOR) });
      return Array.isArray(answer?.results) ? answer.results : [];
    } catch (error) {
      this.#dropBroken(session, error);
      throw error;
    }
  }

  /**
   * No answer (a timeout, a connection gone: the peer may have died without
   * closing it), or a session the peer no longer accepts: the next attempt
   * connects afresh instead of reusing it.
   */
  #dropBroken(
    session: Pick<PeerClient, "call"> | undefined,
    error: unknown,
  ): void {
    if (
      session &&
      (!(error instanceof ProtocolError) ||
        error.code === ErrorCode.S2S_NOT_AUTHENTICATED)
    ) {
      this.#options.pool.forget(session);
    }
  }

  #expired(item: OutboundItem, now: number): boolean {
    return now - item.created.getTime() > this.#options.lifetimeMs;
  }

  /** An item past its lifetime bounces for every recipient left. */
  async #expire(entry: OutboundEntry): Promise<void> {
    const item = entry.value;
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
  }

  /**
   * The entries still this instance's to deliver, as now stored. An item
   * waits behind others of its domain, and a pass can outlast a lease:
   * one whose lease has run more than a third is renewed before its
   * attempt, and one another instance took over meanwhile (its lease
   * expired) is left to that instance. A lease fresh enough costs no write.
   */
  async #keep(entries: OutboundEntry[]): Promise<OutboundEntry[]> {
    const now = this.#now();
    const stale = entries.filter((e) =>
      (e.value.lease?.until ?? 0) - now < this.#leaseMs * 2 / 3
    );
    if (stale.length === 0) return entries;
    const renewed = new Map(
      (await this.#store.lease(stale, this.#holder, now + this.#leaseMs)).map((
        e,
      ) => [e.value.id, e]),
    );
    return entries.flatMap((e) => {
      if (!stale.includes(e)) return [e];
      const mine = renewed.get(e.value.id);
      if (!mine) {
        this.#options.log.info("outbound_taken_over", {
          id: e.value.id,
          domain: e.value.domain,
        });
      }
      return mine ? [mine] : [];
    });
  }

  /** One attempt at an item, in a span whose context travels with it. */
  #deliver(entry: OutboundEntry): Promise<void> {
    return inSpan("amtp.delivery", {
      kind: SpanKind.CLIENT,
      attributes: {
        "amtp.domain": entry.value.domain,
        "amtp.module": entry.value.module,
        "amtp.recipients": entry.value.to.length,
        "amtp.attempt": entry.value.attempts + 1,
      },
    }, () => this.#attempt(entry));
  }

  async #attempt(taken: OutboundEntry): Promise<void> {
    const [entry] = await this.#keep([taken]);
    if (!entry) return;
    const item = entry.value;
    if (this.#expired(item, this.#now())) {
      await this.#expire(entry);
      return;
    }
    // A long attempt (a large attachment to a slow peer) keeps its lease.
    const renewal = this.#renewWhileRunning(entry);
    let results: RecipientResult[];
    try {
      results = await this.#send(item);
      this.#dead.delete(item.domain);
    } catch (error) {
      await this.#failed(await renewal.stop(), error);
      return;
    }
    await this.#settle(await renewal.stop(), results);
  }

  /**
   * Renew `entry`'s lease every third of it until `stop`, which gives the
   * entry as now stored; stops renewing when the item was changed meanwhile
   * (an admin removed or retried it: the attempt's own write then finds it
   * changed and leaves it).
   */
  #renewWhileRunning(
    entry: OutboundEntry,
  ): { stop(): Promise<OutboundEntry> } {
    const schedule = this.#options.schedule ??
      ((fn: () => void, ms: number) => {
        const timer = setTimeout(fn, ms);
        return () => clearTimeout(timer);
      });
    let current = entry;
    let stopped = false;
    let running: Promise<void> = Promise.resolve();
    let cancel = () => {};
    const next = () => {
      cancel = schedule(() => {
        running = (async () => {
          const [mine] = await this.#store.lease(
            [current],
            this.#holder,
            this.#now() + this.#leaseMs,
          );
          if (!mine) return;
          current = mine;
          if (!stopped) next();
        })().catch(() => {});
      }, this.#leaseMs / 3);
    };
    next();
    return {
      stop: async () => {
        stopped = true;
        cancel();
        await running;
        return current;
      },
    };
  }

  /** An attempt at an item failed as a whole: bounce it (permanent) or try later. */
  async #failed(entry: OutboundEntry, error: unknown): Promise<void> {
    const item = entry.value;
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
  }

  /** The remote server answered per recipient: done, bounced or later for each. */
  async #settle(
    entry: OutboundEntry,
    results: RecipientResult[],
  ): Promise<void> {
    const item = entry.value;
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
      this.#options.observe?.(
        "delivered",
        item.to.length - failures.length - retry.length,
      );
      if (failures.length) {
        this.#options.observe?.("bounced", failures.length);
        await this.#options.bounce(item, failures);
      }
      const reasons = results.filter((r) => retry.includes(r.address)).map((
        r,
      ) => r.message).join("; ");
      await this.#postpone(entry, retry, reasons || "temporary failure");
    }
  }

  /**
   * Send an item by its route: AMTP when its domain publishes
   * `amtp-servers`, else email when a gateway carries it; the result per
   * recipient, or the error of the whole attempt.
   */
  async #send(item: OutboundItem): Promise<RecipientResult[]> {
    try {
      return await this.#amtp(item);
    } catch (error) {
      const email = this.#options.email;
      if (
        error instanceof ProtocolError &&
        error.code === ErrorCode.NO_AMTP_RECORD && email?.available
      ) {
        return await email.deliver(item);
      }
      throw error;
    }
  }

  /** Deliver to one of the domain's AMTP servers. */
  async #amtp(item: OutboundItem): Promise<RecipientResult[]> {
    let session: Pick<PeerClient, "call"> | undefined;
    try {
      session = await this.#options.pool.session(
        senderDomain(item.from),
        item.domain,
      );
      if (item.blobs?.length) {
        await this.#options.beforeDeliver?.(session, item);
      }
      const answer = await session.call<{ recipients: RecipientResult[] }>(
        "s2s_deliver",
        {
          module: item.module,
          from: item.from,
          to: item.to,
          id: item.delivery_id,
          payload: item.payload as Record<string, unknown>,
          traceparent: currentTraceparent(),
        },
      );
      return answer.recipients;
    } catch (error) {
      this.#dropBroken(session, error);
      throw error;
    }
  }

  async #finish(
    entry: OutboundEntry,
    failures: Failure[],
  ): Promise<void> {
    const item = entry.value;
    this.#options.observe?.("delivered", item.to.length - failures.length);
    if (failures.length > 0) {
      this.#options.observe?.("bounced", failures.length);
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
        error: failures[0].error,
        reason: failures[0].message.slice(0, 200),
      });
    } else {
      this.#options.log.info("outbound_delivered", {
        id: item.id,
        domain: item.domain,
        attempts: item.attempts + 1,
      });
    }
    // Deliveries finishing together leave the queue in one commit.
    await this.#store.remove(entry);
  }

  async #postpone(
    entry: OutboundEntry,
    to: string[],
    reason: string,
  ): Promise<void> {
    const item = entry.value;
    this.#options.observe?.("deferred", to.length);
    const attempts = item.attempts + 1;
    const base = Math.min(
      this.#options.retryMaxMs,
      this.#options.retryBaseMs * 2 ** (attempts - 1),
    );
    const delay = Math.round(base * (0.5 + this.#random() / 2));
    const { lease: _, ...rest } = item;
    const next = {
      ...rest,
      to,
      attempts,
      next_attempt: this.#now() + delay,
      last_error: reason.slice(0, 500),
    };
    this.#dead.set(item.domain, next.next_attempt);
    await this.#store.update(entry, next);
    this.#options.log.info("outbound_deferred", {
      id: item.id,
      domain: item.domain,
      attempts,
      retry_in_ms: delay,
      reason: next.last_error,
    });
  }
}
