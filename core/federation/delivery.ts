/**
 * What federation hands a module, and what the module answers: deliveries
 * from other servers and bounces of ours (the module's `inbound`, see
 * workers/bridge/services.ts).
 *
 * @module
 */

/** One failed recipient of a bounce. */
export interface Failure {
  /** Recipient. */
  address: string;
  /** Error code. */
  error: number;
  /** Why. */
  message: string;
}

/** A delivery from another server, or a bounce of one of ours. */
export interface InboundDelivery {
  /** `deliver`: a payload from another server for local recipients; `bounce`: a payload of ours that could not be delivered. */
  kind: "deliver" | "bounce";
  /** Sender address. */
  from: string;
  /** Recipients (`deliver`: local; `bounce`: the remote ones that failed). */
  to: string[];
  /** Delivery id (idempotency). */
  id: string;
  /** The payload the sending module queued. */
  payload: unknown;
  /** `bounce`: why, per recipient. */
  failures?: Failure[];
  /** `deliver`: the authenticated sending server. */
  peer?: string;
  /** `deliver`: the domain that server authenticated for (the origin of what it delivers). */
  peer_domain?: string;
}

/** What became of one recipient of a delivery. */
export interface RecipientResult {
  /** The recipient. */
  address: string;
  /** `delivered` or `failed`. */
  status: "delivered" | "failed";
  /** `failed`: the error code. */
  error?: number;
  /** `failed`: why. */
  message?: string;
}

/** Result of an inbound delivery, per recipient. */
export interface InboundResult {
  /** One entry per recipient of `to`. */
  recipients: RecipientResult[];
}

/** Hand a delivery or bounce to a module's `inbound` (its default version). */
export type DeliverToModule = (
  module: string,
  delivery: InboundDelivery,
) => Promise<InboundResult>;
