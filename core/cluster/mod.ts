/**
 * Several instances of one domain on one database: pushes cross between
 * them through the database.
 *
 * A user's sessions may be on any instance; a module's push (new mail, a
 * change) is made on the instance that handled the command or delivery.
 * Each push is sent to this instance's sessions at once and written to the
 * bus, `["push_bus", epochMs, instance, n]`; every instance reads the bus
 * every `pollMs` and sends the pushes of the others to its own sessions.
 *
 * Why reading the bus, not `kv.watch` or `kv.enqueue`: on a local KV file
 * `watch` does not see another process's writes, and a message enqueued by
 * another process may wait up to 60 s (docs/PLATFORM facts); over KV Connect
 * (managed Deno KV) `enqueue`/`listenQueue` are not offered and `watch` is
 * eventually consistent. A list of a key range is a strongly consistent read
 * everywhere. Cost: one list per `pollMs` per instance (an empty one when
 * nothing happens) and one write per push.
 *
 * Entries expire after {@link KEEP_MS}; a reader looks back
 * {@link LOOKBACK_MS} before its last read (writes committing late, clocks of
 * two machines apart) and skips the entries it saw.
 *
 * @module
 */

import type { Push } from "../wire/envelope.ts";
import type { Logger } from "../log/mod.ts";
import { keys } from "../../kv/records.ts";

/** Milliseconds a bus entry is kept. */
const KEEP_MS = 60_000;
/** Milliseconds each read looks back before the last one. */
const LOOKBACK_MS = 3_000;
/** Entries read per page. */
const PAGE = 500;

/** One entry of the bus. */
interface BusEntry {
  /** The account the push is for. */
  address: string;
  /** The push. */
  push: Push;
}

/** Options of {@link PushBus}. */
export interface PushBusOptions {
  /** The shared database. */
  kv: Deno.Kv;
  /** Send a push to this instance's sessions of `address`. */
  deliver: (address: string, push: Push) => Promise<unknown>;
  /** Milliseconds between reads of the bus. */
  pollMs: number;
  /** Logger. */
  log: Logger;
  /** This instance's name (default: a random one). */
  instance?: string;
  /** Clock in epoch milliseconds. */
  now?: () => number;
}

/** Pushes between instances sharing one database. */
export class PushBus {
  readonly #options: PushBusOptions;
  readonly #kv: Deno.Kv;
  readonly #now: () => number;
  /** This instance's name. */
  readonly instance: string;
  #n = 0;
  /** Since when (epoch ms) the bus was read, less the look-back. */
  #since: number;
  /** Keys of entries delivered, with their times (forgotten after the look-back). */
  readonly #seen = new Map<string, number>();
  #timer?: ReturnType<typeof setTimeout>;
  #stopped = false;
  #reading?: Promise<void>;

  /** Create the bus; {@link start} begins reading it. */
  constructor(options: PushBusOptions) {
    this.#options = options;
    this.#kv = options.kv;
    this.#now = options.now ?? Date.now;
    this.instance = options.instance ?? crypto.randomUUID();
    this.#since = this.#now();
  }

  /** Tell the other instances of a push to `address` (this one's sessions got it already). */
  async publish(address: string, push: Push): Promise<void> {
    const key = keys.pushBus(this.#now(), this.instance, this.#n++);
    await this.#kv.set(key, { address, push } satisfies BusEntry, {
      expireIn: KEEP_MS,
    });
  }

  /** Read the bus every `pollMs`. */
  start(): void {
    const tick = () => {
      if (this.#stopped) return;
      this.#reading = this.readOnce().then(() => {}, (error) => {
        this.#options.log.warn("push_bus_read_failed", {
          error: String(error),
        });
      }).finally(() => {
        if (!this.#stopped) {
          this.#timer = setTimeout(tick, this.#options.pollMs);
        }
      });
    };
    this.#timer = setTimeout(tick, this.#options.pollMs);
  }

  /** Stop reading. */
  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#reading;
  }

  /** Deliver the other instances' pushes written since the last read; how many. */
  async readOnce(): Promise<number> {
    const now = this.#now();
    const from = this.#since - LOOKBACK_MS;
    let delivered = 0;
    let cursor: string | undefined;
    do {
      const iter = this.#kv.list<BusEntry>({
        start: keys.pushBus(from),
        end: keys.pushBus(Number.MAX_SAFE_INTEGER),
      }, { limit: PAGE, cursor });
      let count = 0;
      for await (const entry of iter) {
        count++;
        const [, at, instance] = entry.key as [string, number, string];
        if (instance === this.instance || at < now - KEEP_MS) continue;
        const id = JSON.stringify(entry.key);
        if (this.#seen.has(id)) continue;
        this.#seen.set(id, at);
        delivered++;
        // A push that cannot be sent here (a session gone) is not an error.
        await this.#options.deliver(entry.value.address, entry.value.push)
          .catch(() => {});
      }
      cursor = count === PAGE ? iter.cursor : undefined;
    } while (cursor);
    this.#since = now;
    for (const [id, at] of this.#seen) {
      if (at < now - 2 * LOOKBACK_MS) this.#seen.delete(id);
    }
    return delivered;
  }
}
