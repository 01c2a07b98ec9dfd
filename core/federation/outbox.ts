/**
 * The outbound queue: module payloads for addresses on other servers, stored
 * durably in KV before the sender's request is acknowledged. Idempotent by
 * `(module, id)`: queuing the same delivery twice keeps one item.
 *
 * The records are kv/outbound.ts.
 *
 * @module
 */

import type { OutboundItem, OutboundStore } from "../../kv/outbound.ts";
import type { BlobRef } from "./delivery.ts";

/** What a module asks to send to remote recipients. */
export interface OutboundDelivery {
  /** The sending module. */
  module: string;
  /** Sender address (a local user). */
  from: string;
  /** Remote recipients, on any number of domains. */
  to: string[];
  /** Delivery id chosen by the module (idempotency across retries). */
  id: string;
  /** The module's payload. */
  payload: unknown;
  /** Blobs the receiving server must hold first (sent before the payload). */
  blobs?: BlobRef[];
}

/**
 * Queue a payload for remote recipients, one item per domain (concurrent
 * ones share commits). Returns item ids.
 */
export async function enqueueOutbound(
  store: OutboundStore,
  delivery: OutboundDelivery,
  now = Date.now(),
): Promise<string[]> {
  const byDomain = new Map<string, string[]>();
  for (const address of delivery.to) {
    const domain = address.slice(address.lastIndexOf("@") + 1);
    byDomain.set(domain, [...(byDomain.get(domain) ?? []), address]);
  }
  const ids: string[] = [];
  for (const [domain, to] of byDomain) {
    const id = `${delivery.module}:${delivery.id}:${domain}`;
    const item: OutboundItem = {
      id,
      module: delivery.module,
      from: delivery.from,
      to,
      domain,
      delivery_id: delivery.id,
      payload: delivery.payload,
      ...(delivery.blobs?.length ? { blobs: delivery.blobs } : {}),
      created: new Date(now),
      attempts: 0,
      next_attempt: now,
      last_error: "",
    };
    // Already queued (a retried send) when the check fails: kept as it is.
    await store.add(item);
    ids.push(id);
  }
  return ids;
}
