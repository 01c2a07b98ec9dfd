/**
 * Web Push: the subscriptions of users' browsers (and native apps), each an
 * endpoint of a push service with the keys its messages are encrypted to
 * (RFC 8291), and the server's VAPID key pair (RFC 8292), made once.
 *
 * @module
 */

import { keys } from "./records.ts";
import { getOrCreate } from "./secrets.ts";

/** What a notification may show of a new message. */
export type PushPreview = "none" | "sender" | "full";

/** One push subscription of a user. */
export interface PushSubscriptionRecord {
  /** First 16 hex digits of SHA-256 of the endpoint. */
  id: string;
  /** The push service's URL for this subscription (https). */
  endpoint: string;
  /** The subscription's P-256 public key, uncompressed (65 bytes). */
  p256dh: Uint8Array;
  /** The subscription's authentication secret (16 bytes). */
  auth: Uint8Array;
  /** A name the user chose (the browser). */
  label: string;
  /** What a notification may show. */
  preview: PushPreview;
  /** When it was added or last replaced. */
  created: Date;
  /** Failed deliveries in a row (reset by a success). */
  failures: number;
}

/** The server's VAPID key pair, base64url as web-push takes it. */
export interface VapidKeys {
  /** Uncompressed P-256 public key (65 bytes), base64url. */
  publicKey: string;
  /** The private scalar (32 bytes), base64url. */
  privateKey: string;
}

/** Storage of push subscriptions. */
export class PushStore {
  readonly #kv: Deno.Kv;

  /** Wrap an open KV. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /** The VAPID key pair, made by `make` on first use. */
  vapid(make: () => VapidKeys): Promise<VapidKeys> {
    return getOrCreate(this.#kv, keys.vapid(), make);
  }

  /** Add or replace (same id) a subscription of `address`. */
  async put(address: string, record: PushSubscriptionRecord): Promise<void> {
    await this.#kv.set(keys.pushSubscription(address, record.id), record);
  }

  /** The subscriptions of `address`. */
  async list(address: string): Promise<PushSubscriptionRecord[]> {
    const out: PushSubscriptionRecord[] = [];
    for await (
      const entry of this.#kv.list<PushSubscriptionRecord>({
        prefix: keys.pushSubscriptions(address),
      })
    ) out.push(entry.value);
    return out;
  }

  /** Delete a subscription; false when there was none. */
  async delete(address: string, id: string): Promise<boolean> {
    const key = keys.pushSubscription(address, id);
    const entry = await this.#kv.get(key);
    if (entry.value === null) return false;
    await this.#kv.delete(key);
    return true;
  }

  /** Delete every subscription of `address` (the user was deleted). */
  async deleteAll(address: string): Promise<void> {
    for await (
      const entry of this.#kv.list({ prefix: keys.pushSubscriptions(address) })
    ) await this.#kv.delete(entry.key);
  }

  /** Count a failed delivery, or reset the count after a success. */
  async noteResult(address: string, id: string, ok: boolean): Promise<void> {
    const key = keys.pushSubscription(address, id);
    const entry = await this.#kv.get<PushSubscriptionRecord>(key);
    if (!entry.value) return;
    const failures = ok ? 0 : entry.value.failures + 1;
    if (failures === entry.value.failures) return;
    await this.#kv.atomic().check(entry).set(key, {
      ...entry.value,
      failures,
    }).commit();
  }
}
