/**
 * Mail that comes as email: received by the SMTP gateway (`inbound` of kind
 * `email`) or imported by the admin tool, both through {@link storeEmail}
 * and the one mapping of mime.ts; and mail that leaves as email (the
 * `compose` the queue asks for).
 *
 * A message received by email keeps its exact bytes (`email.source`), so
 * nothing is lost even when its MIME is malformed, and an export gives back
 * what came in. Its local id is derived from its Message-ID and those bytes:
 * a sender retrying the same message adds nothing, and a stranger reusing a
 * Message-ID can neither replace nor hide another message. Per mailbox, an
 * index from Message-ID to the first copy with it threads the answers and
 * lets an import skip what is already there.
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  type ComposeRequest,
  ErrorCode,
  type InboundDelivery,
  type InboundResult,
  MAX_MESSAGE_BYTES,
  type ModuleContext,
  ModuleError,
  type ModuleStorage,
  type Resolution,
} from "../../../workers/sdk/mod.ts";
import { maxAttachment, readBlob, storeBlob } from "./attachments.ts";
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
  COPIES_PER_PART,
  type CopyOutcome,
  DEFAULT_QUOTA,
  type EmailAuthRecord,
  type EmailInfo,
  key,
  Mailbox,
  type MessageRecord,
  type NewCopy,
  type Op,
  valueBytes,
} from "./mailbox.ts";
import { composeEmail, type ParsedEmail, parseEmail } from "./mime.ts";
import { forwardAs, MAX_BODY } from "./send.ts";
import {
  afterDelivery,
  decide,
  type DeliveryFacts,
  notKept,
  placed,
} from "./rules.ts";

/** Where one copy of an email goes. */
export interface Placement {
  /** The mailbox. */
  owner: string;
  /** Its quota in bytes. */
  quota: number;
  /** The folder (system or the owner's own; made when missing). */
  folder: string;
  /** Read. */
  seen: boolean;
  /** Flagged. */
  flagged: boolean;
  /** Other IMAP flags to keep (an import). */
  flags?: string[];
}

/** What storing an email needs besides storage. */
export interface EmailEnv {
  /** The module's storage. */
  storage: ModuleStorage;
  /** Which of these domains are hosted here. */
  hosted(domains: string[]): Promise<Set<string>>;
  /** Tell an owner's live sessions of a new copy (absent offline). */
  push?(owner: string, event: string, data: unknown): Promise<unknown>;
}

/** An email to store. */
export interface EmailInput {
  /** Its bytes. */
  raw: Uint8Array;
  /** Its mailboxes. */
  placements: Placement[];
  /** Its date in the mailboxes (received, or the imported date). */
  date: Date;
  /** The envelope sender, when received. */
  mail_from?: string;
  /** The gateway's checks, when received. */
  auth?: EmailAuthRecord;
}

/** SHA-256 of bytes, hex. */
function hashBytes(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

/** The thread of an email in a mailbox, and the copy it answers. */
async function threadOf(
  env: EmailEnv,
  owner: string,
  parsed: ParsedEmail,
  own: string,
  hosted: Set<string>,
): Promise<{ thread: string; in_reply_to: string | null }> {
  const mailbox = new Mailbox(env.storage, owner);
  const refs = [
    ...new Set(
      [parsed.in_reply_to, ...[...parsed.references].reverse()].filter((
        r,
      ): r is string => !!r && r !== own),
    ),
  ].slice(0, 20);
  for (const ref of refs) {
    let copy: MessageRecord | null = null;
    const indexed = await env.storage.get<string>(key.emid(owner, ref));
    if (indexed) copy = (await mailbox.message(indexed.value))?.value ?? null;
    const amtp = parseGlobalId(ref);
    if (!copy && amtp) {
      copy = await mailbox.copyOf(
        localMessageId(amtp, hosted.has(amtp.domain)),
      );
    }
    if (copy) {
      return {
        thread: copy.thread,
        in_reply_to: ref === parsed.in_reply_to ? copy.message_id : null,
      };
    }
  }
  return {
    thread: parsed.references[0] ?? parsed.in_reply_to ?? own,
    in_reply_to: null,
  };
}

/** The reported message of a delivery status notification, in the owner's mailbox. */
async function reported(
  env: EmailEnv,
  owner: string,
  messageId: string | undefined,
  hosted: Set<string>,
): Promise<MessageRecord | null> {
  const global = parseGlobalId(messageId);
  if (!global) return null;
  const mailbox = new Mailbox(env.storage, owner);
  const indexed = await env.storage.get<string>(key.emid(owner, messageId!));
  if (indexed) return (await mailbox.message(indexed.value))?.value ?? null;
  return await mailbox.copyOf(
    mainMessageId(localMessageId(global, hosted.has(global.domain))),
  );
}

/** What became of each placement of {@link storeEmail}. */
export type EmailOutcome = CopyOutcome;

/**
 * Store an email in its mailboxes: its bytes, HTML and attachments as
 * attachments, one copy per placement (threaded in that mailbox), the
 * Message-ID index; pushes `message_new` for each new copy.
 *
 * @throws {ModuleError} `limit_exceeded` when an attachment is larger than
 *   the attachment limit
 */
export async function storeEmail(
  env: EmailEnv,
  input: EmailInput,
  parsed?: ParsedEmail,
): Promise<EmailOutcome[]> {
  const mail = parsed ?? await parseEmail(input.raw);
  const limit = maxAttachment();
  const big = mail.attachments.find((a) => a.content.byteLength > limit);
  if (big || input.raw.byteLength > MAX_MESSAGE_BYTES) {
    throw new ModuleError(
      "limit_exceeded",
      big
        ? `attachment "${big.name}" is larger than ${limit} bytes`
        : `a message is at most ${MAX_MESSAGE_BYTES} bytes`,
    );
  }
  const senderDomain = domainOf(mail.from || input.mail_from || "x@invalid");
  const digest = hashBytes(input.raw);
  const id = sha256Hex(
    `AMTP email\n${mail.message_id ?? ""}\n${digest}`,
  ).slice(0, 24);
  const own = mail.message_id ?? globalId(id, senderDomain || "invalid");
  // Small blobs are written in the same atomic operation as the copies
  // naming them (one commit per message) when the copies go in one; large
  // ones, and those of a message with more copies, before them.
  const blobOps: Op[] = [];
  const together = input.placements.length <= COPIES_PER_PART;
  const blob = async (
    part: string,
    name: string,
    type: string,
    content: Uint8Array,
    extra: Partial<AttachmentRef> = {},
  ): Promise<AttachmentRef> => {
    const meta = await storeBlob(
      env.storage,
      {
        id: sha256Hex(`${id}\n${part}`).slice(0, 24),
        owner: "",
        name,
        type,
      },
      content,
      together ? blobOps : undefined,
    );
    return {
      id: meta.id,
      name,
      type,
      size: meta.size,
      sha256: meta.sha256,
      ...extra,
    };
  };
  // The source, the HTML and the attachments are written side by side.
  const [source, html, ...attachments] = await Promise.all([
    blob("source", "message.eml", "message/rfc822", input.raw),
    mail.html === undefined ? undefined : blob(
      "html",
      "body.html",
      "text/html; charset=utf-8",
      new TextEncoder().encode(mail.html),
    ),
    ...mail.attachments.map((a, i) =>
      blob(`part ${i}`, a.name, a.type, a.content, {
        ...(a.content_id ? { content_id: a.content_id } : {}),
        ...(a.inline ? { inline: true } : {}),
      })
    ),
  ]) as [AttachmentRef, AttachmentRef | undefined, ...AttachmentRef[]];
  const domains = [
    ...new Set(
      [mail.in_reply_to, ...mail.references, mail.report?.message_id]
        .map((r) => parseGlobalId(r)?.domain)
        .filter((d): d is string => d !== undefined),
    ),
  ];
  const hosted = domains.length ? await env.hosted(domains) : new Set<string>();
  let body = mail.text;
  if (new TextEncoder().encode(body).byteLength > MAX_BODY) {
    body = body.slice(0, MAX_BODY / 4) +
      "\n[the text goes on: the whole message is its source]";
  }
  const copies: NewCopy[] = [];
  for (const place of input.placements) {
    const mailbox = new Mailbox(env.storage, place.owner);
    if (!(await mailbox.hasFolder(place.folder))) {
      await mailbox.createFolder(place.folder).catch(() => {});
    }
    let { thread, in_reply_to } = await threadOf(
      env,
      place.owner,
      mail,
      own,
      hosted,
    );
    let report: EmailInfo["report"];
    if (mail.report) {
      const about = await reported(
        env,
        place.owner,
        mail.report.message_id,
        hosted,
      );
      report = {
        message: about?.id ?? null,
        recipients: mail.report.recipients,
      };
      if (about) {
        thread = about.thread;
        in_reply_to = about.message_id;
      }
    }
    const email: EmailInfo = {
      message_id: own,
      from_name: mail.from_name.slice(0, 200),
      source,
      ...(html ? { html } : {}),
      ...(input.mail_from !== undefined ? { mail_from: input.mail_from } : {}),
      ...(input.auth ? { auth: input.auth } : {}),
      references: mail.references,
      ...(place.flags?.length ? { flags: place.flags.slice(0, 20) } : {}),
      ...(report ? { report } : {}),
    };
    const record: MessageRecord = {
      id,
      message_id: id,
      global_id: own,
      owner: place.owner,
      folder: place.folder,
      from: mail.from || input.mail_from || "",
      to: mail.to,
      cc: mail.cc,
      bcc: [],
      subject: mail.subject,
      format: "text",
      encrypted: false,
      attachments,
      in_reply_to,
      thread,
      seen: place.seen,
      flagged: place.flagged,
      date: input.date,
      size: input.raw.byteLength + 200,
      preview: body.replace(/\s+/g, " ").trim().slice(0, 160),
      email,
    };
    copies.push({ record, quota: place.quota });
  }
  // The index names the first copy with this Message-ID in each mailbox:
  // written with the copies where it is absent (read before, checked by the
  // commit; read again when a commit is retried).
  const emids = copies.map((c) => key.emid(c.record.owner, own));
  let indexed = await env.storage.getMany(emids);
  const outcomes = await addMessage(env.storage, {
    id,
    body,
    fresh: false,
    copies,
  }, {
    bytes: blobOps.reduce((n, o) => n + valueBytes(o), 0),
    checks: copies.length,
    last: async (outcomes, retry) => {
      if (retry) indexed = await env.storage.getMany(emids);
      const ops: Op[] = [...blobOps];
      copies.forEach((copy, i) => {
        if (outcomes[i] === "quota" || indexed[i] !== null) return;
        ops.push(
          { op: "check", key: emids[i], versionstamp: null },
          { op: "set", key: emids[i], value: copy.record.id },
        );
      });
      return ops;
    },
  });
  // Pushes leave once the copies are durable; the answer does not wait for
  // them (a session that misses one catches up with `changes`).
  if (env.push) {
    Promise.all(
      outcomes.map((change, i) =>
        typeof change === "object"
          ? env.push!(copies[i].record.owner, "message_new", {
            ...change.summary,
            seq: change.seq,
          })
          : 0
      ),
    ).catch(() => {});
  }
  return outcomes;
}

/** Whether a mailbox holds a message with this Message-ID already. */
export async function hasEmail(
  storage: ModuleStorage,
  owner: string,
  messageId: string,
): Promise<boolean> {
  return (await storage.get(key.emid(owner, messageId))) !== null;
}

/** Which of `domains` are hosted here, asked through the core. */
function hostedVia(ctx: ModuleContext) {
  return async (domains: string[]): Promise<Set<string>> => {
    const probes = await ctx.accounts.resolve(
      domains.map((d) => `postmaster@${d}`),
    );
    return new Set(
      domains.filter((_, i) => {
        const probe = probes[i];
        return probe.kind !== "invalid" &&
          !probe.remote.includes(probe.address!);
      }),
    );
  };
}

/** A message received by email (`inbound` of kind `email`). */
export async function inboundEmail(
  delivery: InboundDelivery,
  ctx: ModuleContext,
  quotaDefault = DEFAULT_QUOTA,
): Promise<InboundResult> {
  const payload = (delivery.payload ?? {}) as Record<string, unknown>;
  const refuse = (error: number, message: string): InboundResult => ({
    recipients: delivery.to.map((address) => ({
      address,
      status: "failed",
      error,
      message,
    })),
  });
  if (!(payload.raw instanceof Uint8Array)) {
    return refuse(ErrorCode.INVALID_PARAMETER, "no message");
  }
  // The core resolved the recipients when it handed the message over.
  const given = payload.resolutions;
  const resolutions =
    Array.isArray(given) && given.length === delivery.to.length
      ? given as Resolution[]
      : await ctx.accounts.resolve(delivery.to);
  const placements = new Map<string, Placement>();
  for (const r of resolutions) {
    for (const m of r.mailboxes) {
      placements.set(m.address, {
        owner: m.address,
        quota: m.quota || quotaDefault,
        folder: "inbox",
        seen: false,
        flagged: false,
      });
    }
  }
  let mail;
  try {
    mail = await parseEmail(payload.raw);
  } catch {
    return refuse(ErrorCode.INVALID_PARAMETER, "unreadable message");
  }
  const auth = payload.auth as EmailAuthRecord | undefined;
  const header = (name: string) =>
    mail.headers.find(([n]) => n === name)?.[1] ?? "";
  // The recipients' rules, before anything is stored.
  const facts: DeliveryFacts = {
    from: mail.from || delivery.from,
    mail_from: delivery.from,
    to: mail.to,
    cc: mail.cc,
    subject: mail.subject,
    size: payload.raw.byteLength,
    attachments: mail.attachments.filter((a) => !a.inline).length,
    headers: mail.headers,
    ...(auth
      ? {
        auth: {
          spf: auth.spf.result,
          dkim: auth.dkim.find((d) => d.result === "pass")?.result ??
            auth.dkim[0]?.result ?? "none",
          dmarc: auth.dmarc.result,
        },
      }
      : {}),
    forwarded: header("x-amtp-forwarded").split(",").map((a) =>
      a.trim().toLowerCase()
    ).filter((a) => a.includes("@")).slice(0, 10),
    auto_submitted: header("auto-submitted").split(";")[0].trim()
      .toLowerCase().slice(0, 64),
  };
  const decisions = await decide(ctx, facts, [...placements.keys()]);
  const { rejected, dropped } = notKept(decisions);
  for (const owner of dropped) placements.delete(owner);
  for (const [owner, place] of placements) {
    Object.assign(place, placed(decisions.get(owner)));
  }
  let outcomes: EmailOutcome[];
  try {
    outcomes = await storeEmail({
      storage: ctx.storage,
      hosted: hostedVia(ctx),
      push: (owner, event, data) => ctx.push(owner, event, data),
    }, {
      raw: payload.raw,
      placements: [...placements.values()],
      date: payload.received instanceof Date ? payload.received : new Date(),
      mail_from: delivery.from,
      auth,
    }, mail);
  } catch (error) {
    if (error instanceof ModuleError && error.code === "limit_exceeded") {
      return refuse(ErrorCode.LIMIT_EXCEEDED, error.message);
    }
    throw error;
  }
  const owners = [...placements.keys()];
  const full = new Set(owners.filter((_, i) => outcomes[i] === "quota"));
  if (decisions.size) {
    const stored = new Map<string, string>();
    owners.forEach((owner, i) => {
      const change = outcomes[i];
      if (typeof change === "object") stored.set(owner, change.id);
    });
    await afterDelivery(ctx, decisions, {
      facts,
      messageId: stored.values().next().value ?? "",
      subject: mail.subject,
      body: mail.text,
      format: "text",
      stored,
    }, forwardAs(ctx, quotaDefault));
  }
  return {
    recipients: resolutions.map((r) => {
      if (r.kind === "invalid" || r.mailboxes.length === 0) {
        return {
          address: r.input,
          status: "failed",
          error: r.kind === "invalid"
            ? ErrorCode.INVALID_ADDRESS
            : ErrorCode.NOT_FOUND,
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

/** Looks for the sender's copy before composing, and the pause between them. */
const COPY_WAITS = 40;
const COPY_WAIT_MS = 50;
/** A message this young whose sender's copy is missing is tried again later. */
const YOUNG_MS = 10 * 60_000;

/**
 * Compose a payload queued by `send` as an Internet message, for a
 * recipient reached by email (the queue's `compose`). An encrypted message
 * cannot leave as email: refused (`email_not_encrypted`).
 */
export async function composeOutbound(
  request: ComposeRequest,
  ctx: ModuleContext,
): Promise<{ raw: Uint8Array }> {
  const p = (request.payload ?? {}) as Record<string, unknown>;
  if (p.encrypted === true || typeof p.body !== "string") {
    throw new ModuleError(
      "email_not_encrypted",
      "an end-to-end encrypted message cannot be sent as email",
    );
  }
  const strings = (v: unknown) =>
    Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
  const sender = request.from;
  const domain = domainOf(sender);
  // The sender's copy names the attachments. `send` queues before it stores
  // that copy (so that a crash between the two loses no delivery): the
  // queue may ask a moment before it is there. Wait a little; a message
  // still young is tried again later; after that the copy was deleted, and
  // the message goes without its attachments.
  const mailbox = new Mailbox(ctx.storage, sender);
  let sent = await mailbox.copyOf(mainMessageId(request.id));
  for (let i = 0; !sent && i < COPY_WAITS; i++) {
    await new Promise((r) => setTimeout(r, COPY_WAIT_MS));
    sent = await mailbox.copyOf(mainMessageId(request.id));
  }
  const written = p.date instanceof Date ? p.date.getTime() : 0;
  if (!sent && Date.now() - written < YOUNG_MS) {
    throw new Error(
      "the sender's copy of the message is not stored yet: try again",
    );
  }
  const attachments = [];
  for (const a of sent?.attachments ?? []) {
    attachments.push({
      name: a.name,
      type: a.type,
      content: await readBlob(ctx.storage, a),
      ...(a.content_id ? { content_id: a.content_id } : {}),
      ...(a.inline ? { inline: true } : {}),
    });
  }
  const profile = await ctx.accounts.profile(sender).catch(() => null);
  const name = typeof profile?.name === "string" ? profile.name : "";
  const inReplyTo = typeof p.in_reply_to === "string" ? p.in_reply_to : null;
  const thread = typeof p.thread === "string" ? p.thread : null;
  const own = globalId(request.id, domain);
  const raw = await composeEmail({
    from: sender,
    from_name: name,
    to: strings(p.to),
    cc: strings(p.cc),
    subject: typeof p.subject === "string" ? p.subject : "",
    body: p.body,
    format: typeof p.format === "string" ? p.format : "text",
    date: p.date instanceof Date ? p.date : new Date(),
    message_id: own,
    in_reply_to: inReplyTo,
    references: thread && thread !== own ? [thread] : [],
    attachments,
    // What keeps automatic answers and forwards from looping (rules).
    headers: [
      ...(typeof p.auto_submitted === "string" && p.auto_submitted
        ? [["Auto-Submitted", p.auto_submitted] as [string, string]]
        : []),
      ...(strings(p.forwarded).length
        ? [
          ["X-AMTP-Forwarded", strings(p.forwarded).join(", ")] as [
            string,
            string,
          ],
        ]
        : []),
    ],
  });
  if (raw.byteLength > MAX_MESSAGE_BYTES) {
    throw new ModuleError(
      "limit_exceeded",
      `the message is ${raw.byteLength} bytes as email; at most ${MAX_MESSAGE_BYTES}`,
    );
  }
  return { raw };
}
