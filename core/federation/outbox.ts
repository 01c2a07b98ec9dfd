/**
 * The outbound queue: module payloads for addresses on other servers, stored
 * durably in KV before the sender's request is acknowledged. Idempotent by
 * `(module, id)`: queuing the same delivery twice keeps one item.
 *
 * Key layout: `["outbound", itemId]` -> {@link OutboundItem},
 * `["outbound_by_domain", domain, itemId]` -> true.
 *
 * @module
 */

import type { GroupCommit } from "../../kv/group_commit.ts";

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
}

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
  /** When it was queued. */
  created: Date;
  /** Attempts so far. */
  attempts: number;
  /** Epoch milliseconds of the next attempt. */
  next_attempt: number;
  /** Last failure. */
  last_error: string;
}

/**
 * Queue a payload for remote recipients, one item per domain (committed with
 * concurrent ones by `writes`). Returns item ids.
 */
export async function enqueueOutbound(
  writes: GroupCommit,
  delivery: OutboundDelivery,
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
      created: new Date(),
      attempts: 0,
      next_attempt: Date.now(),
      last_error: "",
    };
    // Already queued (a retried send) when the check fails: kept as it is.
    await writes.write([{ key: ["outbound", id], versionstamp: null }], {
      mutations: 2,
      mutate: (op) =>
        op.set(["outbound", id], item).set(
          ["outbound_by_domain", domain, id],
          true,
        ),
    });
    ids.push(id);
  }
  return ids;
}
