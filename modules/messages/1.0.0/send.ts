/**
 * Sending: resolve recipients, store the content once, deliver a copy to every
 * local mailbox (each delivery atomic and idempotent by message id), queue
 * remote recipients, keep the sender's copy in Sent, push to every live
 * session, and answer per recipient — only after everything is durable.
 *
 * A client-chosen `client_id` makes the send idempotent: the message id is
 * derived from sender and client id, so a retry (even after a crash in the
 * middle) delivers nothing twice and answers what the first attempt did.
 *
 * With `bcc_bodies` (encrypted messages), each Bcc recipient gets a message
 * of its own: its own body, an id derived from the message's and its address
 * (ids.ts), its own remote delivery.
 *
 * @module
 */

import {
  ErrorCode,
  type ModuleContext,
  ModuleError,
} from "../../../workers/sdk/mod.ts";
import type { BlobMeta } from "./attachments.ts";
import { bccMessageId, domainOf, globalId, newMessageId } from "./ids.ts";
import {
  afterDelivery,
  decide,
  type DeliveryFacts,
  type ForwardSender,
  makeFolders,
  notKept,
  placed,
} from "./rules.ts";
import {
  addMessage,
  type AttachmentRef,
  bodyBytes,
  type CopyOutcome,
  DEFAULT_QUOTA,
  Mailbox,
  type MessageRecord,
  type NewCopy,
  type NewMessage,
} from "./mailbox.ts";

/** Recipients of one message, all fields together. */
export const MAX_RECIPIENTS = 100;
/** Largest body in bytes. */
export const MAX_BODY = 512 * 1024;

/** What a send asks for (already checked for types). */
export interface SendRequest {
  /** Recipients. */
  to: string[];
  /** Copy recipients. */
  cc: string[];
  /** Blind copy recipients. */
  bcc: string[];
  /** Subject. */
  subject: string;
  /** Body: text, or bytes when encrypted. */
  body: string | Uint8Array;
  /**
   * One body per `bcc` address, in the same order (encrypted messages): each
   * Bcc recipient gets its own instead of `body`.
   */
  bcc_bodies?: Uint8Array[];
  /** `text`, `markdown` or `html`. */
  format: string;
  /** Attachments (finished uploads of the sender). */
  attachments: BlobMeta[];
  /** The sender's copy this message answers (a copy id). */
  in_reply_to: string | null;
  /** Client idempotency key. */
  client_id?: string;
  /** Opaque encrypted body. */
  encrypted: boolean;
  /** Set for a forward by rules: who forwarded it, in order (loop protection). */
  forwarded?: string[];
  /** Set for an automatic message (`auto-replied`: a vacation reply). */
  auto_submitted?: string;
}

/** The outcome for one written recipient. */
export interface RecipientResult {
  /** As written. */
  address: string;
  /** `delivered`, `queued` (remote) or `failed`. */
  status: "delivered" | "queued" | "failed";
  /** Protocol error code when failed: INVALID_ADDRESS, NOT_FOUND (unknown) or LIMIT_EXCEEDED (quota). */
  error?: number;
  /** Why it failed. */
  message?: string;
}

/** The answer to a send. */
export interface SendResult {
  /** Message id (the same in every mailbox of this server). */
  message_id: string;
  /** `<message_id>@<sender's domain>`, the message's id on every server. */
  global_id: string;
  /** Id of the sender's copy in Sent. */
  id: string;
  /** When it was sent. */
  date: Date;
  /** One entry per written recipient. */
  recipients: RecipientResult[];
}

/**
 * How the rules' forwards leave: sent as their owner, in clear, without the
 * original's recipients or attachments (rules.ts's {@link ForwardSender}).
 */
export function forwardAs(
  ctx: ModuleContext,
  quotaDefault: number,
): ForwardSender {
  return (owner, forward) =>
    send(
      {
        ...forward,
        cc: [],
        bcc: [],
        attachments: [],
        in_reply_to: null,
        encrypted: false,
      },
      { ...ctx, caller: { address: owner, session: "rules" } },
      quotaDefault,
    );
}

/** The payload of a message for another server (docs/PROTOCOL.md 14.4). */
export interface RemotePayload {
  to: string[];
  cc: string[];
  subject: string;
  format: string;
  encrypted: boolean;
  /** Global id of the message answered. */
  in_reply_to: string | null;
  /** Global id of the thread's first message. */
  thread: string;
  date: Date;
  body: string | Uint8Array;
  /** The attachments, sent before the payload (transfer.ts). */
  attachments?: AttachmentRef[];
  /** Who forwarded it, in order (rules; loop protection). */
  forwarded?: string[];
  /** `auto-replied` for a vacation reply (never answered automatically). */
  auto_submitted?: string;
}

function preview(body: string | Uint8Array, encrypted: boolean): string {
  if (encrypted || typeof body !== "string") return "";
  return body.replace(/\s+/g, " ").trim().slice(0, 160);
}

/** Mailboxes (with quotas) and remote addresses one message goes to. */
interface Destinations {
  mailboxes: Map<string, number>;
  remote: string[];
}

/** Send a message as the caller. */
export async function send(
  request: SendRequest,
  ctx: ModuleContext,
  quotaDefault = DEFAULT_QUOTA,
): Promise<SendResult> {
  const sender = ctx.caller.address;
  const domain = domainOf(sender);
  const written = [...request.to, ...request.cc, ...request.bcc];
  if (written.length === 0) {
    throw new ModuleError(
      "invalid_parameter",
      "a message needs at least one recipient",
      { parameter: "to" },
    );
  }
  if (written.length > MAX_RECIPIENTS) {
    throw new ModuleError(
      "limit_exceeded",
      `at most ${MAX_RECIPIENTS} recipients`,
    );
  }
  const messageId = newMessageId(sender, request.client_id);
  const storage = ctx.storage;
  const resultKey = ["sent_result", sender, messageId];
  if (request.client_id) {
    const earlier = await storage.get<SendResult>(resultKey);
    if (earlier) return earlier.value;
  }

  const resolutions = await ctx.accounts.resolve(written);
  // An encrypted message never leaves as plain email: recipients reached by
  // email only are refused (the client was told by `recipients`).
  const emailOnly = new Set<string>();
  if (request.encrypted) {
    const remote = [...new Set(resolutions.flatMap((r) => r.remote))];
    if (remote.length) {
      const routes = await ctx.federation.routes(remote);
      remote.forEach((a, i) => routes[i] === "email" && emailOnly.add(a));
    }
  }
  // The copy answered, in the sender's mailbox: its local id for local
  // copies, its global id and thread for everyone.
  const parent = request.in_reply_to
    ? await new Mailbox(storage, sender).copyOf(request.in_reply_to)
    : null;
  const inReplyTo = parent?.message_id ?? request.in_reply_to;
  const attachments: AttachmentRef[] = request.attachments.map((a) => ({
    id: a.id,
    name: a.name,
    type: a.type,
    size: a.size,
    sha256: a.sha256,
    ...(a.content_id ? { content_id: a.content_id } : {}),
    ...(a.inline ? { inline: true } : {}),
  }));
  const attachmentBytes = attachments.reduce((n, a) => n + a.size, 0);
  const date = new Date();

  // Each mailbox and remote address gets one message: the main one, or a
  // Bcc recipient's own (only when it is not also a To or Cc recipient).
  const bodies = request.bcc_bodies;
  const direct = bodies
    ? resolutions.slice(0, request.to.length + request.cc.length)
    : resolutions;
  const main: Destinations = { mailboxes: new Map(), remote: [] };
  const taken = new Set<string>();
  const collect = (into: Destinations, r: (typeof resolutions)[number]) => {
    for (const m of r.mailboxes) {
      if (taken.has(m.address)) continue;
      taken.add(m.address);
      into.mailboxes.set(m.address, m.quota || quotaDefault);
    }
    for (const address of r.remote) {
      if (taken.has(address) || emailOnly.has(address)) continue;
      taken.add(address);
      into.remote.push(address);
    }
  };
  for (const r of direct) collect(main, r);
  const blind: { id: string; body: Uint8Array; to: Destinations }[] = [];
  if (bodies) {
    request.bcc.forEach((_, i) => {
      const r = resolutions[direct.length + i];
      const to: Destinations = { mailboxes: new Map(), remote: [] };
      collect(to, r);
      blind.push({
        id: bccMessageId(messageId, r.address ?? r.input),
        body: bodies[i],
        to,
      });
    });
  }

  // The local recipients' rules, before anything is stored.
  const facts: DeliveryFacts = {
    from: sender,
    to: request.to,
    cc: request.cc,
    subject: request.subject,
    size: bodyBytes(request.body) + request.subject.length + attachmentBytes +
      200,
    attachments: attachments.length,
    headers: [],
    forwarded: request.forwarded ?? [],
    auto_submitted: request.auto_submitted ?? "",
  };
  const decisions = await decide(ctx, facts, [
    ...new Set([main, ...blind.map((b) => b.to)].flatMap((d) => [
      ...d.mailboxes.keys(),
    ])),
  ]);
  const { rejected, dropped } = notKept(decisions);
  for (const d of [main, ...blind.map((b) => b.to)]) {
    for (const owner of dropped) d.mailboxes.delete(owner);
  }
  await makeFolders(ctx, decisions);

  const thread = parent?.thread ?? null;
  const payload = (body: string | Uint8Array): RemotePayload => ({
    to: request.to,
    cc: request.cc,
    subject: request.subject,
    format: request.format,
    encrypted: request.encrypted,
    in_reply_to: parent?.global_id ?? null,
    thread: thread ?? globalId(messageId, domain),
    date,
    body,
    ...(attachments.length ? { attachments } : {}),
    ...(request.forwarded ? { forwarded: request.forwarded } : {}),
    ...(request.auto_submitted
      ? { auto_submitted: request.auto_submitted }
      : {}),
  });
  const queued = new Set<string>();
  for (
    const m of [{ id: messageId, body: request.body, to: main }, ...blind]
  ) {
    if (m.to.remote.length === 0) continue;
    await ctx.federation.send({
      from: sender,
      to: m.to.remote,
      id: m.id,
      payload: payload(m.body),
      ...(attachments.length
        ? {
          blobs: attachments.filter((a) => a.size > 0).map((a) => ({
            id: a.id,
            sha256: a.sha256,
            size: a.size,
          })),
        }
        : {}),
    });
    for (const address of m.to.remote) queued.add(address);
  }

  // Without a client id the message id is new (random): nothing to check.
  const fresh = request.client_id === undefined;
  const recordOf = async (
    id: string,
    body: string | Uint8Array,
    owner: string,
    sentCopy: boolean,
  ): Promise<MessageRecord> => ({
    id: sentCopy ? `${id}-sent` : id,
    message_id: id,
    global_id: globalId(id, domain),
    owner,
    ...(sentCopy
      ? { folder: "sent", seen: true, flagged: false }
      : placed(decisions.get(owner))),
    from: sender,
    to: request.to,
    cc: request.cc,
    bcc: sentCopy ? request.bcc : [],
    subject: request.subject,
    format: request.format,
    encrypted: request.encrypted,
    attachments,
    in_reply_to: inReplyTo,
    // The parent's thread; else the recipient's copy of what it answers
    // may know it; else the message starts one.
    thread: thread ??
      (inReplyTo
        ? (await new Mailbox(storage, owner).copyOf(inReplyTo))?.thread
        : undefined) ??
      globalId(messageId, domain),
    date,
    size: bodyBytes(body) + request.subject.length + attachmentBytes + 200,
    preview: preview(body, request.encrypted),
    ...(request.forwarded ? { forwarded: request.forwarded } : {}),
    ...(request.auto_submitted
      ? { auto_submitted: request.auto_submitted }
      : {}),
  });
  const messageOf = async (
    id: string,
    body: string | Uint8Array,
    to: Destinations,
    withSent: boolean,
  ): Promise<NewMessage> => {
    const copies: NewCopy[] = [];
    for (const [address, quota] of to.mailboxes) {
      copies.push({
        record: await recordOf(id, body, address, false),
        quota,
        fresh,
      });
    }
    // The sender's copy is kept even in a full mailbox.
    if (withSent) {
      copies.push({
        record: await recordOf(id, body, sender, true),
        quota: Number.MAX_SAFE_INTEGER,
        fresh,
      });
    }
    return { id, body, fresh, copies };
  };

  // Bcc recipients' own messages first, then the main one with the answer
  // for a retry: that answer is stored only once everything else is.
  const blindMessages = await Promise.all(
    blind.map((m) => messageOf(m.id, m.body, m.to, false)),
  );
  const blindOutcomes = await Promise.all(
    blindMessages.map((m) => addMessage(storage, m)),
  );
  const mainMessage = await messageOf(messageId, request.body, main, true);
  const resultOf = (outcomes: CopyOutcome[]): SendResult => {
    const all = [...blindOutcomes.flat(), ...outcomes];
    const copies = [
      ...blindMessages.flatMap((m) => m.copies),
      ...mainMessage
        .copies,
    ];
    const full = new Set(
      copies.filter((_, i) => all[i] === "quota").map((c) => c.record.owner),
    );
    const recipients = resolutions.map((r): RecipientResult => {
      if (r.kind === "invalid") {
        return {
          address: r.input,
          status: "failed",
          error: ErrorCode.INVALID_ADDRESS,
          message: `invalid address: ${r.reason}`,
        };
      }
      if (r.kind === "unknown") {
        return {
          address: r.input,
          status: "failed",
          error: ErrorCode.NOT_FOUND,
          message: r.reason ?? "no such mailbox",
        };
      }
      if (
        r.mailboxes.length > 0 &&
        r.mailboxes.every((m) => rejected.has(m.address))
      ) {
        return {
          address: r.input,
          status: "failed",
          error: ErrorCode.REJECTED,
          message: rejected.get(r.mailboxes[0].address)!,
        };
      }
      if (
        r.mailboxes.length > 0 && r.mailboxes.every((m) => full.has(m.address))
      ) {
        return {
          address: r.input,
          status: "failed",
          error: ErrorCode.LIMIT_EXCEEDED,
          message: "the recipient's mailbox is full",
        };
      }
      if (
        r.mailboxes.length === 0 && r.remote.length > 0 &&
        r.remote.every((a) => emailOnly.has(a))
      ) {
        return {
          address: r.input,
          status: "failed",
          error: ErrorCode.EMAIL_NOT_ENCRYPTED,
          message:
            "this address receives ordinary email only: an end-to-end encrypted message cannot go to it",
        };
      }
      if (r.mailboxes.length === 0 && r.remote.every((a) => queued.has(a))) {
        return { address: r.input, status: "queued" };
      }
      return { address: r.input, status: "delivered" };
    });
    return {
      message_id: messageId,
      global_id: globalId(messageId, domain),
      id: `${messageId}-sent`,
      date,
      recipients,
    };
  };
  const outcomes = await addMessage(storage, mainMessage, {
    // What a retry with the same client id is answered.
    last: (outcomes) =>
      Promise.resolve(
        request.client_id
          ? [{ op: "set" as const, key: resultKey, value: resultOf(outcomes) }]
          : [],
      ),
  });
  const result = resultOf(outcomes);
  if (decisions.size) {
    const stored = new Map<string, string>();
    [...blindMessages, mainMessage].forEach((m, j) =>
      (j < blindMessages.length ? blindOutcomes[j] : outcomes).forEach(
        (change, i) => {
          const { owner, id, folder } = m.copies[i].record;
          if (typeof change === "object" && folder !== "sent") {
            stored.set(owner, id);
          }
        },
      )
    );
    await afterDelivery(ctx, decisions, {
      facts,
      messageId,
      subject: request.subject,
      body: request.body,
      format: request.format,
      stored,
    }, forwardAs(ctx, quotaDefault));
  }
  const pushes = [...blindMessages, mainMessage].flatMap((m, j) =>
    (j < blindMessages.length ? blindOutcomes[j] : outcomes).flatMap((
      change,
      i,
    ) =>
      typeof change === "object"
        ? [{ address: m.copies[i].record.owner, change }]
        : []
    )
  );
  // Pushes leave once everything is durable; the answer does not wait for
  // the core to confirm them (a session that misses one catches up with
  // `changes`).
  Promise.all(
    pushes.map(({ address, change }) =>
      change.type === "new" && change.folder !== "sent"
        ? ctx.push(address, "message_new", {
          ...change.summary,
          seq: change.seq,
        })
        : ctx.push(address, "mailbox_changed", {
          seq: change.seq,
          changes: [change],
        })
    ),
  ).catch((error) =>
    ctx.log("warn", "push_failed", { error: String(error).slice(0, 200) })
  );
  return result;
}
