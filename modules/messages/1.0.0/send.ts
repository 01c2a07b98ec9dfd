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
 * @module
 */

import { createHash } from "node:crypto";
import { type ModuleContext, ModuleError } from "../../../workers/sdk/mod.ts";
import type { BlobMeta } from "./attachments.ts";
import {
  addCopies,
  type AttachmentRef,
  bodyBytes,
  type Change,
  contentOps,
  DEFAULT_QUOTA,
  holdersOf,
  key,
  Mailbox,
  type NewCopy,
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
  /** `text`, `markdown` or `html`. */
  format: string;
  /** Attachments (finished uploads of the sender). */
  attachments: BlobMeta[];
  /** Answered message id. */
  in_reply_to: string | null;
  /** Client idempotency key. */
  client_id?: string;
  /** Opaque encrypted body. */
  encrypted: boolean;
}

/** The outcome for one written recipient. */
export interface RecipientResult {
  /** As written. */
  address: string;
  /** `delivered`, `queued` (remote) or `failed`. */
  status: "delivered" | "queued" | "failed";
  /** Protocol error code when failed: 200 invalid, 201 unknown, 206 quota. */
  error?: number;
  /** Why it failed. */
  message?: string;
}

/** The answer to a send. */
export interface SendResult {
  /** Message id (the same in every mailbox). */
  message_id: string;
  /** Id of the sender's copy in Sent. */
  id: string;
  /** When it was sent. */
  date: Date;
  /** One entry per written recipient. */
  recipients: RecipientResult[];
}

function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** A message id: derived from sender and client id (idempotent), else random. */
function newMessageId(sender: string, clientId?: string): string {
  if (clientId !== undefined) {
    return sha256Hex(`${sender}\n${clientId}`).slice(0, 24);
  }
  return Array.from(
    crypto.getRandomValues(new Uint8Array(12)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

function preview(body: string | Uint8Array, encrypted: boolean): string {
  if (encrypted || typeof body !== "string") return "";
  return body.replace(/\s+/g, " ").trim().slice(0, 160);
}

async function threadOf(
  mailbox: Mailbox,
  inReplyTo: string | null,
  messageId: string,
): Promise<string> {
  if (!inReplyTo) return messageId;
  const parent = (await mailbox.message(inReplyTo)) ??
    (await mailbox.message(`${inReplyTo}-sent`));
  return parent?.value.thread ?? inReplyTo;
}

/** Send a message as the caller. */
export async function send(
  request: SendRequest,
  ctx: ModuleContext,
  quotaDefault = DEFAULT_QUOTA,
): Promise<SendResult> {
  const sender = ctx.caller.address;
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

  const resolutions = await ctx.resolve(written);
  const attachments: AttachmentRef[] = request.attachments.map((a) => ({
    id: a.id,
    name: a.name,
    type: a.type,
    size: a.size,
    sha256: a.sha256,
  }));
  const size = bodyBytes(request.body) + request.subject.length +
    attachments.reduce((n, a) => n + a.size, 0) +
    200;
  const date = new Date();

  // Local mailboxes, each once, and remote addresses.
  const mailboxes = new Map<string, number>();
  const remote = new Set<string>();
  for (const r of resolutions) {
    for (const m of r.mailboxes) {
      mailboxes.set(m.address, m.quota || quotaDefault);
    }
    for (const address of r.remote) remote.add(address);
  }
  const base = {
    message_id: messageId,
    from: sender,
    to: request.to,
    cc: request.cc,
    subject: request.subject,
    format: request.format,
    encrypted: request.encrypted,
    attachments,
    in_reply_to: request.in_reply_to,
    flagged: false,
    date,
    size,
    preview: preview(request.body, request.encrypted),
  };
  let queued = new Set<string>();
  if (remote.size > 0) {
    await ctx.sendRemote({
      from: sender,
      to: [...remote],
      id: messageId,
      payload: { ...base, bcc: [], body: request.body },
    });
    queued = remote;
  }
  // Every local copy and the sender's copy in Sent (with bcc; counted against
  // the sender's quota only as far as it fits: a full mailbox does not stop a
  // send), with the content shared by all of them and the list of who holds
  // a copy, in one atomic operation for up to 8 copies.
  // Without a client id the message id is new (random): nothing to check.
  const fresh = request.client_id === undefined;
  const sentId = `${messageId}-sent`;
  const copies: NewCopy[] = [];
  for (const [address, quota] of mailboxes) {
    copies.push({
      record: {
        ...base,
        id: messageId,
        owner: address,
        folder: "inbox",
        bcc: [],
        thread: await threadOf(
          new Mailbox(storage, address),
          request.in_reply_to,
          messageId,
        ),
        seen: false,
      },
      quota,
      fresh,
    });
  }
  copies.push({
    record: {
      ...base,
      id: sentId,
      owner: sender,
      folder: "sent",
      bcc: request.bcc,
      thread: await threadOf(
        new Mailbox(storage, sender),
        request.in_reply_to,
        messageId,
      ),
      seen: true,
    },
    quota: Number.MAX_SAFE_INTEGER,
    fresh,
  });
  const first = await contentOps(storage, messageId, {
    body: request.body,
    fresh,
  });
  // The answer, from each copy's outcome (in the order of `copies`).
  const resultOf = (outcomes: (Change | "exists" | "quota")[]): SendResult => {
    const full = new Set(
      copies.filter((_, i) => outcomes[i] === "quota").map((c) =>
        c.record.owner
      ),
    );
    const recipients = resolutions.map((r): RecipientResult => {
      if (r.kind === "invalid") {
        return {
          address: r.input,
          status: "failed",
          error: 200,
          message: `invalid address: ${r.reason}`,
        };
      }
      if (r.kind === "unknown") {
        return {
          address: r.input,
          status: "failed",
          error: 201,
          message: r.reason ?? "no such mailbox",
        };
      }
      if (
        r.mailboxes.length > 0 && r.mailboxes.every((m) => full.has(m.address))
      ) {
        return {
          address: r.input,
          status: "failed",
          error: 206,
          message: "the recipient's mailbox is full",
        };
      }
      if (r.mailboxes.length === 0 && r.remote.every((a) => queued.has(a))) {
        return { address: r.input, status: "queued" };
      }
      return { address: r.input, status: "delivered" };
    });
    return { message_id: messageId, id: sentId, date, recipients };
  };
  const outcomes = await addCopies(storage, copies, {
    first,
    last: (outcomes) =>
      Promise.resolve([
        // Who holds a copy (one entry per copy): the content goes with the last one.
        {
          op: "set",
          fresh: true,
          key: key.owners(messageId),
          value: holdersOf(copies, outcomes),
        },
        // What a retry with the same client id is answered.
        ...(request.client_id
          ? [{ op: "set" as const, key: resultKey, value: resultOf(outcomes) }]
          : []),
      ]),
  });
  const result = resultOf(outcomes);
  const pushes = outcomes.flatMap((change, i) =>
    typeof change === "object"
      ? [{ address: copies[i].record.owner, change }]
      : []
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
