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

/**
 * A delivery from another server, or a bounce of one of ours, or one step of
 * an attachment's transfer (core/federation/blobs.ts): `blob_offer` and
 * `blob_put` on the receiving server (`id` the blob's SHA-256, `payload`
 * `{size, offset?, data?}`), `blob_read` on the sending one (`payload`
 * `{blob, size, offset}`: the sending module's blob id).
 */
export interface InboundDelivery {
  /** `deliver`: a payload from another server for local recipients; `bounce`: a payload of ours that could not be delivered; `blob_*`: an attachment's transfer. */
  kind: "deliver" | "bounce" | "blob_offer" | "blob_put" | "blob_read";
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
  /** One entry per recipient of `to` (empty for `blob_*`). */
  recipients: RecipientResult[];
  /** `blob_offer`, `blob_put`: bytes of the blob stored; `blob_read`: the chunk read. */
  blob?: { offset: number; data?: Uint8Array };
}

/** A blob a queued delivery needs at the receiving server first. */
export interface BlobRef {
  /** The sending module's id of the blob (what `blob_read` names). */
  id: string;
  /** SHA-256 of its bytes, hex (what the receiving server stores it by). */
  sha256: string;
  /** Bytes. */
  size: number;
}

/** Hand a delivery or bounce to a module's `inbound` (its default version). */
export type DeliverToModule = (
  module: string,
  delivery: InboundDelivery,
) => Promise<InboundResult>;
