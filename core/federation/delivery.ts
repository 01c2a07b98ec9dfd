/**
 * What federation hands a module, and what the module answers: deliveries
 * from other servers and bounces of ours (the module's `inbound`, see
 * workers/bridge/services.ts).
 *
 * @module
 */

import type { Resolution } from "../routing/mod.ts";

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
 * A delivery from another server, a bounce of one of ours, a message received
 * by email, or one step of an attachment's transfer
 * (core/federation/blobs.ts): `blob_offer` and `blob_put` on the receiving
 * server (`id` the blob's SHA-256, `payload` `{size, offset?, data?}`),
 * `blob_read` on the sending one (`payload` `{blob, size, offset}`: the
 * sending module's blob id).
 */
export interface InboundDelivery {
  /**
   * `deliver`: a payload from another server for local recipients;
   * `bounce`: a payload of ours that could not be delivered; `email`: a
   * message received over SMTP ({@link EmailPayload}); `blob_*`: an
   * attachment's transfer.
   */
  kind:
    | "deliver"
    | "bounce"
    | "email"
    | "blob_offer"
    | "blob_put"
    | "blob_read";
  /** Sender address (`email`: the envelope sender, empty for a bounce). */
  from: string;
  /** Recipients (`deliver`, `email`: local; `bounce`: the remote ones that failed). */
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

/** What a gateway found out about a message it received by email. */
export interface EmailAuth {
  /** The client's IP address. */
  client_ip: string;
  /** The name it gave in HELO/EHLO. */
  helo: string;
  /** Whether the session was encrypted (STARTTLS). */
  tls: boolean;
  /** SPF (RFC 7208) of the envelope sender's domain (or the HELO name). */
  spf: { result: string; domain: string };
  /** Each DKIM signature (RFC 6376): its result, signing domain and selector. */
  dkim: { result: string; domain: string; selector: string }[];
  /** DMARC (RFC 7489) of the From domain: result and published policy. */
  dmarc: { result: string; domain: string; policy: string };
  /** ARC (RFC 8617) chain validation. */
  arc: { result: string };
  /** The same as an `Authentication-Results` header value (RFC 8601). */
  summary: string;
}

/** The payload of an `email` delivery. */
export interface EmailPayload {
  /** The message as received, byte for byte (RFC 5322). */
  raw: Uint8Array;
  /** The gateway's checks. */
  auth: EmailAuth;
  /** When it was received. */
  received: Date;
  /**
   * The core's resolution of the delivery's `to`, in order, made when it
   * handed the message over: the module need not ask for it again.
   */
  resolutions?: Resolution[];
}

/** A message a gateway received, for local recipients (`mail.deliver`). */
export interface EmailIn {
  /** The envelope sender (MAIL FROM); empty for a bounce. */
  mail_from: string;
  /** The local recipients it accepted (RCPT TO). */
  to: string[];
  /** The message, byte for byte. */
  raw: Uint8Array;
  /** What it checked. */
  auth: EmailAuth;
}

/** A queued payload, for its module to compose as an Internet message (`compose`). */
export interface ComposeRequest {
  /** Sender address. */
  from: string;
  /** The recipients this message goes to (one domain). */
  to: string[];
  /** Delivery id. */
  id: string;
  /** The module's payload. */
  payload: unknown;
}

/** A mail server to try, in order. */
export interface MailHost {
  /** Its name (for TLS and logs). */
  host: string;
  /** Its addresses, in order. */
  addresses: string[];
}

/** A message for a gateway to send (`transport`). */
export interface TransportRequest {
  /** The route: `smtp`. */
  route: string;
  /** Envelope sender. */
  from: string;
  /** Recipients, all of one domain. */
  to: string[];
  /** Delivery id (for logs). */
  id: string;
  /** The message, signed, byte for byte. */
  raw: Uint8Array;
  /** The destination's mail servers by preference (MX, else its address). */
  hosts: MailHost[];
}

/** What a gateway made of one recipient. */
export interface TransportRecipient {
  /** The recipient. */
  address: string;
  /** `delivered`; `failed` (refused for good); `deferred` (try again later). */
  status: "delivered" | "failed" | "deferred";
  /** The remote server's reply, or why it could not be reached. */
  reply: string;
}

/** The answer of a `transport`. */
export interface TransportResult {
  /** One entry per recipient. */
  recipients: TransportRecipient[];
}
