/**
 * Mail from other servers, and bounces of ours.
 *
 * - `deliver`: the payload a remote messages module queued; each local
 *   recipient (aliases and catch-all apply) gets a copy. The message is the
 *   origin's: its global id is the delivery id at the domain the sending
 *   server authenticated for (`peer_domain`, set by the core, never read from
 *   the payload), its local id a hash of that (ids.ts). So a delivery only
 *   ever adds a message; a retry of the same (origin, id) adds nothing and
 *   changes nothing; no id a peer sends can name a message made elsewhere.
 * - `bounce`: a remote delivery failed for good; the sender gets a notice in
 *   the inbox from `mailer-daemon@<their domain>` naming each failed
 *   recipient and why.
 * - `email`: a message the SMTP gateway received (email.ts).
 *
 * @module
 */

import {
  ErrorCode,
  type InboundDelivery,
  type InboundResult,
  type ModuleContext,
} from "../../../workers/sdk/mod.ts";
import {
  domainOf,
  globalId,
  localMessageId,
  mainMessageId,
  parseGlobalId,
  sha256Hex,
} from "./ids.ts";
import {
  addMessage,
  type AttachmentRef,
  bodyBytes,
  DEFAULT_QUOTA,
  Mailbox,
  type MessageRecord,
  type NewMessage,
} from "./mailbox.ts";
import { inboundEmail } from "./email.ts";
import { forwardAs, MAX_BODY } from "./send.ts";
import {
  afterDelivery,
  decide,
  type DeliveryFacts,
  makeFolders,
  notKept,
  placed,
} from "./rules.ts";
import { blobOffer, blobPut, blobRead, receivedBlob } from "./transfer.ts";
import { maxAttachment, touchBlob } from "./attachments.ts";
import { attachmentLimits, maxAttachmentFor } from "./settings.ts";

/** What a copy takes from a sending server's payload, each field checked. */
interface Fields {
  to: string[];
  cc: string[];
  subject: string;
  format: string;
  encrypted: boolean;
  date: Date;
  body: string | Uint8Array;
  in_reply_to: unknown;
  thread: unknown;
  /** Attachments as the origin names them (their bytes came first: transfer.ts). */
  attachments: AttachmentRef[];
  /** Who forwarded it, in order (at most 10 addresses). */
  forwarded: string[];
  /** Auto-Submitted (`auto-replied` ...), or "". */
  auto_submitted: string;
}

/** Attachments a payload names, each field checked. */
function attachmentsOf(raw: unknown): AttachmentRef[] {
  if (!Array.isArray(raw)) return [];
  return raw.slice(0, 32).flatMap((a) => {
    const r = (a ?? {}) as Record<string, unknown>;
    const text = (v: unknown, max: number) =>
      typeof v === "string" ? v.slice(0, max) : "";
    if (
      typeof r.id !== "string" || !/^[0-9A-Za-z_-]{1,64}$/.test(r.id) ||
      typeof r.sha256 !== "string" || !/^[0-9a-f]{64}$/.test(r.sha256) ||
      typeof r.size !== "number" || !Number.isSafeInteger(r.size) ||
      r.size < 0
    ) return [];
    const cid = text(r.content_id, 255);
    return [{
      id: r.id,
      name: text(r.name, 255),
      type: text(r.type, 255),
      size: r.size,
      sha256: r.sha256,
      ...(/^[\x21-\x3b\x3d\x3f-\x7e]+$/.test(cid) ? { content_id: cid } : {}),
      ...(r.inline === true ? { inline: true } : {}),
    }];
  });
}

function fieldsOf(raw: unknown, now: Date): Fields {
  const p = (raw ?? {}) as Record<string, unknown>;
  const strings = (v: unknown) =>
    Array.isArray(v)
      ? v.filter((x): x is string => typeof x === "string" && x.length <= 320)
        .slice(0, 100)
      : [];
  const body = typeof p.body === "string" || p.body instanceof Uint8Array
    ? p.body
    : "";
  // A date from the future would keep a message on top of the inbox.
  const date = p.date instanceof Date && p.date.getTime() <= now.getTime()
    ? p.date
    : now;
  return {
    to: strings(p.to),
    cc: strings(p.cc),
    subject: typeof p.subject === "string" ? p.subject.slice(0, 1000) : "",
    format: ["text", "markdown", "html"].includes(String(p.format))
      ? String(p.format)
      : "text",
    encrypted: p.encrypted === true || body instanceof Uint8Array,
    date,
    body,
    in_reply_to: p.in_reply_to,
    thread: p.thread,
    attachments: attachmentsOf(p.attachments),
    forwarded: strings(p.forwarded).slice(0, 10),
    auto_submitted: typeof p.auto_submitted === "string"
      ? p.auto_submitted.slice(0, 64)
      : "",
  };
}

/** A received copy of a message, before its thread is known. */
function recordOf(
  fields: Fields,
  message: { id: string; global: string; from: string; owner: string },
  inReplyTo: string | null,
  thread: string,
): MessageRecord {
  const { body, date } = fields;
  return {
    id: message.id,
    message_id: message.id,
    global_id: message.global,
    owner: message.owner,
    folder: "inbox",
    from: message.from,
    to: fields.to,
    cc: fields.cc,
    bcc: [],
    subject: fields.subject,
    format: fields.format,
    encrypted: fields.encrypted,
    attachments: fields.attachments,
    in_reply_to: inReplyTo,
    thread,
    seen: false,
    flagged: false,
    date,
    size: bodyBytes(body) + fields.subject.length + 200 +
      fields.attachments.reduce((n, a) => n + a.size, 0),
    preview: fields.encrypted || typeof body !== "string"
      ? ""
      : body.replace(/\s+/g, " ").trim().slice(0, 160),
    ...(fields.forwarded.length ? { forwarded: fields.forwarded } : {}),
    ...(fields.auto_submitted ? { auto_submitted: fields.auto_submitted } : {}),
  };
}

/** Store a message and push each new copy to its owner; the owners that are full. */
async function store(
  ctx: ModuleContext,
  message: NewMessage,
): Promise<Set<string>> {
  const outcomes = await addMessage(ctx.storage, message);
  // Pushes leave once the copies are durable; the answer to the sending
  // server does not wait for them (a session that misses one catches up
  // with `changes`).
  Promise.all(
    outcomes.map((change, i) =>
      typeof change === "object"
        ? ctx.push(message.copies[i].record.owner, "message_new", {
          ...change.summary,
          seq: change.seq,
        })
        : 0
    ),
  ).catch((error) =>
    ctx.log("warn", "push_failed", { error: String(error).slice(0, 200) })
  );
  return new Set(
    message.copies.filter((_, i) => outcomes[i] === "quota").map((c) =>
      c.record.owner
    ),
  );
}

/** Handle an inbound delivery or bounce. */
export async function inbound(
  delivery: InboundDelivery,
  ctx: ModuleContext,
  quotaDefault = DEFAULT_QUOTA,
): Promise<InboundResult> {
  if (delivery.kind === "bounce") return await bounce(delivery, ctx);
  if (delivery.kind === "blob_read") return await blobRead(delivery, ctx);
  if (delivery.kind === "blob_offer") {
    return await blobOffer(delivery, ctx, quotaDefault);
  }
  if (delivery.kind === "blob_put") {
    return await blobPut(delivery, ctx, quotaDefault);
  }
  if (delivery.kind === "email") {
    return await inboundEmail(delivery, ctx, quotaDefault);
  }
  const refuse = (error: number, message: string): InboundResult => ({
    recipients: delivery.to.map((address) => ({
      address,
      status: "failed",
      error,
      message,
    })),
  });
  // The domain the sending server authenticated for, as the core passes it.
  const peerDomain = delivery.peer_domain;
  const origin = typeof peerDomain === "string" ? peerDomain.toLowerCase() : "";
  if (!origin || domainOf(delivery.from) !== origin) {
    return refuse(
      ErrorCode.S2S_FROM_MISMATCH,
      "the sender is not of the sending domain",
    );
  }
  const now = new Date();
  const fields = fieldsOf(delivery.payload, now);
  if (bodyBytes(fields.body) > MAX_BODY) {
    return refuse(
      ErrorCode.LIMIT_EXCEEDED,
      `a body is at most ${MAX_BODY} bytes`,
    );
  }
  // Each attachment's bytes are here, verified, before its message.
  for (const a of fields.attachments) {
    if (a.size === 0) continue;
    const blob = await receivedBlob(ctx.storage, a.sha256);
    // Marked as used now: a sweep does not take it from under the message.
    if (!blob || !(await touchBlob(ctx.storage, blob))) {
      return refuse(
        ErrorCode.NOT_FOUND,
        `attachment ${a.id} (${a.sha256}) was not received: send it with s2s_blob first`,
      );
    }
    a.blob = blob;
  }
  const answered = parseGlobalId(fields.in_reply_to);
  const named = parseGlobalId(fields.thread);
  // Which domains are hosted here, asked with the recipients: a hosted
  // domain's address never resolves to itself as a remote one.
  const domains = [...new Set([origin, answered?.domain ?? origin])];
  const resolutions = await ctx.accounts.resolve([
    ...delivery.to,
    ...domains.map((d) => `postmaster@${d}`),
  ]);
  const recipients = resolutions.slice(0, delivery.to.length);
  const hosted = new Set(
    domains.filter((_, i) => {
      const probe = resolutions[delivery.to.length + i];
      return probe.kind !== "invalid" && !probe.remote.includes(probe.address!);
    }),
  );
  if (hosted.has(origin)) {
    return refuse(
      ErrorCode.S2S_NOT_DELEGATED,
      `${origin} is hosted here: no other server speaks for it`,
    );
  }
  const global = globalId(delivery.id, origin);
  const id = localMessageId({ id: delivery.id, global }, false);
  const inReplyTo = answered
    ? localMessageId(answered, hosted.has(answered.domain))
    : null;
  // Each recipient's own attachment limit, checked again now that the
  // message says who gets which attachment (the transfer was checked
  // against the largest limit of all its recipients).
  const largest = fields.attachments.reduce((n, a) => Math.max(n, a.size), 0);
  const limits = attachmentLimits();
  const overLimit = new Map<string, number>();
  for (const r of recipients) {
    const limit = r.kind === "invalid"
      ? Infinity
      : maxAttachmentFor(r.input, maxAttachment(), limits);
    if (largest > limit) overLimit.set(r.input, limit);
  }
  const mailboxes = new Map<string, number>();
  for (const r of recipients) {
    if (overLimit.has(r.input)) continue;
    for (const m of r.mailboxes) {
      mailboxes.set(m.address, m.quota || quotaDefault);
    }
  }
  // The recipients' rules, before anything is stored.
  const facts: DeliveryFacts = {
    from: delivery.from,
    to: fields.to,
    cc: fields.cc,
    subject: fields.subject,
    size: bodyBytes(fields.body) + fields.subject.length + 200 +
      fields.attachments.reduce((n, a) => n + a.size, 0),
    attachments: fields.attachments.length,
    headers: [],
    forwarded: fields.forwarded,
    auto_submitted: fields.auto_submitted,
  };
  const decisions = await decide(ctx, facts, [...mailboxes.keys()]);
  const { rejected, dropped } = notKept(decisions);
  for (const owner of dropped) mailboxes.delete(owner);
  await makeFolders(ctx, decisions);
  const copies = [];
  for (const [owner, quota] of mailboxes) {
    // The thread the origin names; else the one of the answered message
    // here; else the answered message's; else this one starts it.
    const thread = named?.global ??
      (inReplyTo
        ? (await new Mailbox(ctx.storage, owner).copyOf(inReplyTo))?.thread
        : undefined) ??
      answered?.global ?? global;
    copies.push({
      record: {
        ...recordOf(
          fields,
          { id, global, from: delivery.from, owner },
          inReplyTo,
          thread,
        ),
        ...placed(decisions.get(owner)),
      },
      quota,
    });
  }
  const full = await store(ctx, {
    id,
    body: fields.body,
    fresh: false,
    copies,
  });
  if (decisions.size) {
    await afterDelivery(ctx, decisions, {
      facts,
      messageId: id,
      subject: fields.subject,
      body: fields.body,
      format: fields.format,
      stored: new Map(
        [...mailboxes.keys()].filter((o) => !full.has(o)).map((o) => [o, id]),
      ),
    }, forwardAs(ctx, quotaDefault));
  }
  return {
    recipients: recipients.map((r) => {
      if (r.kind === "invalid") {
        return {
          address: r.input,
          status: "failed",
          error: ErrorCode.INVALID_ADDRESS,
          message: "invalid address",
        };
      }
      if (overLimit.has(r.input)) {
        return {
          address: r.input,
          status: "failed",
          error: ErrorCode.LIMIT_EXCEEDED,
          message: `attachments for ${r.input} are at most ${
            overLimit.get(r.input)
          } bytes here`,
        };
      }
      if (r.mailboxes.length === 0) {
        return {
          address: r.input,
          status: "failed",
          error: ErrorCode.NOT_FOUND,
          message: r.reason ?? "no such mailbox",
        };
      }
      if (r.mailboxes.every((m) => rejected.has(m.address))) {
        return {
          address: r.input,
          status: "failed",
          error: ErrorCode.REJECTED,
          message: rejected.get(r.mailboxes[0].address)!,
        };
      }
      if (r.mailboxes.every((m) => full.has(m.address))) {
        return {
          address: r.input,
          status: "failed",
          error: ErrorCode.LIMIT_EXCEEDED,
          message: "the recipient's mailbox is full",
        };
      }
      return { address: r.input, status: "delivered" };
    }),
  };
}

async function bounce(
  delivery: InboundDelivery,
  ctx: ModuleContext,
): Promise<InboundResult> {
  const now = new Date();
  const original = fieldsOf(delivery.payload, now);
  const domain = domainOf(delivery.from);
  // The sender's message (a Bcc recipient's delivery has an id of its own).
  const answered = mainMessageId(delivery.id);
  const lines = [
    `Your message "${original.subject}" of ${original.date.toISOString()} could not be delivered to:`,
    "",
    ...(delivery.failures ?? []).map((f) =>
      `  ${f.address}: error ${f.error}: ${f.message}`
    ),
    "",
    `Message id: ${answered}`,
  ];
  const id = sha256Hex(`bounce\n${delivery.id}\n${delivery.to.join(",")}`)
    .slice(0, 24);
  const global = globalId(id, domain);
  const parent = await new Mailbox(ctx.storage, delivery.from).copyOf(
    answered,
  );
  const notice: Fields = {
    to: [delivery.from],
    cc: [],
    subject: `Undeliverable: ${original.subject}`.slice(0, 1000),
    format: "text",
    encrypted: false,
    date: now,
    body: lines.join("\n"),
    in_reply_to: null,
    thread: null,
    attachments: [],
    forwarded: [],
    auto_submitted: "auto-generated",
  };
  await store(ctx, {
    id,
    body: notice.body,
    fresh: false,
    copies: [{
      record: recordOf(
        notice,
        {
          id,
          global,
          from: `mailer-daemon@${domain}`,
          owner: delivery.from,
        },
        answered,
        parent?.thread ?? globalId(answered, domain),
      ),
      quota: Number.MAX_SAFE_INTEGER,
    }],
  });
  return {
    recipients: delivery.to.map((address) => ({
      address,
      status: "delivered",
    })),
  };
}
