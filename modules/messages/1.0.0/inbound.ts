/**
 * Mail from other servers, and bounces of ours.
 *
 * - `deliver`: the payload a remote messages module queued; each local
 *   recipient (aliases and catch-all apply) gets a copy, idempotent by the
 *   message id, so a retried delivery never makes a second copy.
 * - `bounce`: a remote delivery failed for good; the sender gets a notice in
 *   the inbox from `mailer-daemon@<their domain>` naming each failed
 *   recipient and why.
 *
 * @module
 */

import type {
  InboundDelivery,
  InboundResult,
  ModuleContext,
} from "../../../workers/sdk/mod.ts";
import {
  addCopies,
  bodyBytes,
  contentOps,
  DEFAULT_QUOTA,
  holdersOf,
  key,
  Mailbox,
  type NewCopy,
} from "./mailbox.ts";

/** The fields of a message a sending server carries in its payload. */
interface Payload {
  message_id: string;
  from: string;
  to: string[];
  cc: string[];
  subject: string;
  format: string;
  encrypted: boolean;
  in_reply_to: string | null;
  date: Date;
  size: number;
  preview: string;
  body: string | Uint8Array;
}

function asPayload(raw: unknown, from: string, id: string): Payload {
  const p = (raw ?? {}) as Record<string, unknown>;
  const strings = (v: unknown) =>
    Array.isArray(v)
      ? v.filter((x): x is string => typeof x === "string").slice(0, 100)
      : [];
  const body = typeof p.body === "string" || p.body instanceof Uint8Array
    ? p.body
    : "";
  const encrypted = p.encrypted === true;
  const subject = typeof p.subject === "string" ? p.subject.slice(0, 1000) : "";
  return {
    message_id: id,
    from,
    to: strings(p.to),
    cc: strings(p.cc),
    subject,
    format: ["text", "markdown", "html"].includes(String(p.format))
      ? String(p.format)
      : "text",
    encrypted,
    in_reply_to: typeof p.in_reply_to === "string"
      ? p.in_reply_to.slice(0, 64)
      : null,
    date: p.date instanceof Date ? p.date : new Date(),
    size: bodyBytes(body) + subject.length + 200,
    preview: encrypted || typeof body !== "string"
      ? ""
      : body.replace(/\s+/g, " ").trim().slice(0, 160),
    body,
  };
}

async function store(
  ctx: ModuleContext,
  payload: Payload,
  mailboxes: Map<string, number>,
): Promise<Map<string, "ok" | "quota">> {
  const { body: _, ...fields } = payload;
  const copies: NewCopy[] = [];
  for (const [address, quota] of mailboxes) {
    const parent = payload.in_reply_to
      ? await new Mailbox(ctx.storage, address).message(payload.in_reply_to)
      : null;
    copies.push({
      record: {
        ...fields,
        id: payload.message_id,
        owner: address,
        folder: "inbox",
        bcc: [],
        attachments: [],
        thread: parent?.value.thread ?? payload.in_reply_to ??
          payload.message_id,
        seen: false,
        flagged: false,
      },
      quota,
    });
  }
  // A delivery may be a retry: its content may be there already.
  const first = await contentOps(ctx.storage, payload.message_id, {
    body: payload.body,
    fresh: false,
  });
  const ownersKey = key.owners(payload.message_id);
  const outcomes = await addCopies(ctx.storage, copies, {
    first,
    // Holders of a copy, added to those of an earlier delivery of the same message.
    last: async (outcomes) => {
      const existing = await ctx.storage.get<string[]>(ownersKey);
      const holders = holdersOf(copies, outcomes);
      return [
        {
          op: "check",
          key: ownersKey,
          versionstamp: existing?.versionstamp ?? null,
        },
        {
          op: "set",
          key: ownersKey,
          value: [...new Set([...(existing?.value ?? []), ...holders])],
        },
      ];
    },
  });
  const outcome = new Map<string, "ok" | "quota">();
  copies.forEach((c, i) =>
    outcome.set(c.record.owner, outcomes[i] === "quota" ? "quota" : "ok")
  );
  await Promise.all(
    outcomes.map((change, i) =>
      typeof change === "object"
        ? ctx.push(copies[i].record.owner, "message_new", {
          ...change.summary,
          seq: change.seq,
        })
        : 0
    ),
  );
  return outcome;
}

/** Handle an inbound delivery or bounce. */
export async function inbound(
  delivery: InboundDelivery,
  ctx: ModuleContext,
  quotaDefault = DEFAULT_QUOTA,
): Promise<InboundResult> {
  if (delivery.kind === "bounce") return await bounce(delivery, ctx);
  const payload = asPayload(delivery.payload, delivery.from, delivery.id);
  const resolutions = await ctx.resolve(delivery.to);
  const mailboxes = new Map<string, number>();
  for (const r of resolutions) {
    for (const m of r.mailboxes) {
      mailboxes.set(m.address, m.quota || quotaDefault);
    }
  }
  const outcome = await store(ctx, payload, mailboxes);
  return {
    recipients: resolutions.map((r) => {
      if (r.kind === "invalid") {
        return {
          address: r.input,
          status: "failed",
          error: 200,
          message: "invalid address",
        };
      }
      if (r.mailboxes.length === 0) {
        return {
          address: r.input,
          status: "failed",
          error: 201,
          message: r.reason ?? "no such mailbox",
        };
      }
      if (r.mailboxes.every((m) => outcome.get(m.address) === "quota")) {
        return {
          address: r.input,
          status: "failed",
          error: 206,
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
  const original = asPayload(delivery.payload, delivery.from, delivery.id);
  const domain = delivery.from.slice(delivery.from.lastIndexOf("@") + 1);
  const lines = [
    `Your message "${original.subject}" of ${original.date.toISOString()} could not be delivered to:`,
    "",
    ...(delivery.failures ?? []).map((f) =>
      `  ${f.address}: error ${f.error}: ${f.message}`
    ),
    "",
    `Message id: ${delivery.id}`,
  ];
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(
      `bounce\n${delivery.id}\n${delivery.to.join(",")}`,
    ),
  );
  const id = Array.from(
    new Uint8Array(digest).subarray(0, 12),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  const notice: Payload = {
    message_id: id,
    from: `mailer-daemon@${domain}`,
    to: [delivery.from],
    cc: [],
    subject: `Undeliverable: ${original.subject}`.slice(0, 1000),
    format: "text",
    encrypted: false,
    in_reply_to: delivery.id,
    date: new Date(),
    size: 0,
    preview: "",
    body: lines.join("\n"),
  };
  notice.size = notice.body.length + notice.subject.length + 200;
  notice.preview = (notice.body as string).replace(/\s+/g, " ").slice(0, 160);
  await store(ctx, notice, new Map([[delivery.from, Number.MAX_SAFE_INTEGER]]));
  return {
    recipients: delivery.to.map((address) => ({
      address,
      status: "delivered",
    })),
  };
}
