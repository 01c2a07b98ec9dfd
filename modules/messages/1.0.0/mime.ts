/**
 * The one mapping between AMTP messages and Internet messages (MIME, RFC
 * 5322 and 2045-2049), both ways: what the SMTP gateway receives and sends,
 * and what `deno task admin export` / `import` read and write, all pass
 * here. The formats are the libraries' (mailparser reads, nodemailer's
 * composer writes); what is written by hand is which field goes where.
 *
 * - Message-ID, In-Reply-To and References become AMTP ids without their
 *   angle brackets: an AMTP global id `<id>@<domain>` already has the shape
 *   of a Message-ID, so a conversation mixing both threads as one.
 * - The plain text body is the AMTP body (text made from the HTML when there
 *   is none); the HTML is kept apart, to be shown sanitized.
 * - Attachments and inline images (with their Content-ID) become attachments.
 * - A delivery status notification (RFC 3464) is read into a report: which
 *   message it speaks of, and what became of each recipient.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { simpleParser } from "mailparser";
import type { AddressObject, ParsedMail } from "mailparser";
import MailComposer from "nodemailer/lib/mail-composer/index.js";

/** Characters kept of a subject. */
const MAX_SUBJECT = 1000;
/** Message-IDs kept of References. */
const MAX_REFERENCES = 20;
/** Addresses kept of To and Cc each. */
const MAX_ADDRESSES = 100;

/** An attachment of a parsed message. */
export interface MimeAttachment {
  /** File name (a made-up one when the part has none). */
  name: string;
  /** MIME type. */
  type: string;
  /** The decoded bytes. */
  content: Uint8Array;
  /** Content-ID without angle brackets (inline images, `cid:` URLs). */
  content_id?: string;
  /** Shown in the body rather than as a file (`Content-Disposition: inline` in `multipart/related`). */
  inline?: boolean;
}

/** What a delivery status notification says of one recipient (RFC 3464). */
export interface ReportRecipient {
  /** The recipient (`Final-Recipient`). */
  address: string;
  /** `failed`, `delayed`, `delivered`, `relayed` or `expanded`. */
  action: string;
  /** The status code, e.g. `5.1.1`. */
  status: string;
  /** The remote server's words (`Diagnostic-Code`). */
  diagnostic: string;
}

/** A delivery status notification. */
export interface MimeReport {
  /** Message-ID of the message it reports on (without brackets), if it names one. */
  message_id?: string;
  /** One entry per recipient it reports on. */
  recipients: ReportRecipient[];
}

/** An Internet message, read. */
export interface ParsedEmail {
  /** Message-ID without brackets, or undefined when it has none usable. */
  message_id?: string;
  /** The sender (From), lowercase, or "" when there is none. */
  from: string;
  /** The sender's display name. */
  from_name: string;
  /** To addresses, lowercase. */
  to: string[];
  /** Cc addresses, lowercase. */
  cc: string[];
  /** Subject. */
  subject: string;
  /** The Date header, when valid. */
  date?: Date;
  /** In-Reply-To (the first Message-ID in it), without brackets. */
  in_reply_to?: string;
  /** References, oldest first, without brackets. */
  references: string[];
  /** The plain text (made from the HTML when the message has no text part). */
  text: string;
  /** The HTML body, if any. */
  html?: string;
  /** Attachments and inline images. */
  attachments: MimeAttachment[];
  /** Set for a delivery status notification. */
  report?: MimeReport;
  /** The header fields, names lower-case, values unfolded (at most 100, each cut at 1,000 characters): for rules. */
  headers: [string, string][];
}

/** A message id as AMTP keeps it: the part between `<` and `>`, trimmed; undefined when unusable. */
export function bareId(value: string | undefined | null): string | undefined {
  if (!value) return undefined;
  const inside = value.match(/<([^<>\s]+)>/)?.[1] ?? value.trim();
  if (!inside || inside.length > 400 || /[\s<>]/.test(inside)) {
    return undefined;
  }
  return inside;
}

/** Every message id in a header value (`<a@b> <c@d>`), in order. */
function ids(value: string | string[] | undefined): string[] {
  const text = Array.isArray(value) ? value.join(" ") : value ?? "";
  const out: string[] = [];
  for (const match of text.matchAll(/<([^<>\s]+)>/g)) {
    if (match[1].length <= 400) out.push(match[1]);
  }
  if (out.length === 0 && text.trim() && !/\s/.test(text.trim())) {
    const one = bareId(text);
    if (one) out.push(one);
  }
  return out;
}

function addresses(value: AddressObject | AddressObject[] | undefined) {
  const objects = value === undefined
    ? []
    : Array.isArray(value)
    ? value
    : [value];
  const out: { address: string; name: string }[] = [];
  const walk = (
    list: { address?: string; name: string; group?: unknown }[],
  ) => {
    for (const a of list) {
      if (Array.isArray(a.group)) walk(a.group);
      else if (a.address) {
        out.push({ address: a.address.toLowerCase(), name: a.name ?? "" });
      }
    }
  };
  for (const o of objects) walk(o.value);
  return out.slice(0, MAX_ADDRESSES);
}

/** The fields of one block of a `message/delivery-status` part. */
function fields(block: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of block.replace(/\r?\n[ \t]+/g, " ").split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon > 0) {
      out.set(
        line.slice(0, colon).trim().toLowerCase(),
        line.slice(colon + 1).trim(),
      );
    }
  }
  return out;
}

/** A delivery status notification's report, when `parsed` is one. */
function reportOf(parsed: ParsedMail): MimeReport | undefined {
  const type = parsed.headers.get("content-type") as
    | { value?: string; params?: Record<string, string> }
    | undefined;
  if (
    type?.value?.toLowerCase() !== "multipart/report" ||
    type.params?.["report-type"]?.toLowerCase() !== "delivery-status"
  ) return undefined;
  const status = parsed.attachments.find((a) =>
    a.contentType.toLowerCase() === "message/delivery-status"
  );
  const recipients: ReportRecipient[] = [];
  if (status) {
    const blocks = status.content.toString("utf8").split(/\r?\n\r?\n/);
    for (const block of blocks.slice(1)) {
      const f = fields(block);
      const final = f.get("final-recipient") ?? f.get("original-recipient");
      if (!final) continue;
      recipients.push({
        address: final.replace(/^[^;]*;\s*/, "").toLowerCase().slice(0, 320),
        action: (f.get("action") ?? "").toLowerCase().slice(0, 32),
        status: (f.get("status") ?? "").slice(0, 32),
        diagnostic: (f.get("diagnostic-code") ?? "").replace(
          /^[^;]*;\s*/,
          "",
        ).slice(0, 1000),
      });
      if (recipients.length >= 100) break;
    }
  }
  // The message it reports on: its headers, or the whole of it.
  const original = parsed.attachments.find((a) =>
    ["message/rfc822", "text/rfc822-headers", "message/global"].includes(
      a.contentType.toLowerCase(),
    )
  );
  const head = original?.content.toString("utf8").split(/\r?\n\r?\n/)[0] ?? "";
  const messageId = bareId(fields(head).get("message-id"));
  return { message_id: messageId, recipients };
}

/**
 * Read an Internet message. Lenient, like the parser: a malformed message is
 * read as far as it goes (its exact bytes are kept apart by the caller).
 */
export async function parseEmail(raw: Uint8Array): Promise<ParsedEmail> {
  const parsed = await simpleParser(
    Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength),
    {
      keepCidLinks: true,
      skipTextToHtml: true,
      skipTextLinks: true,
      skipImageLinks: true,
      keepDeliveryStatus: true,
      maxHtmlLengthToParse: 2 * 1024 * 1024,
    },
  );
  const from = addresses(parsed.from)[0];
  const references = ids(parsed.references).slice(-MAX_REFERENCES);
  const html = typeof parsed.html === "string" ? parsed.html : undefined;
  const report = reportOf(parsed);
  // The parts of a report are read into it, and kept as files too.
  const attachments = parsed.attachments.map((a, i): MimeAttachment => {
    const content = new Uint8Array(
      a.content.buffer,
      a.content.byteOffset,
      a.content.byteLength,
    );
    const inline = a.related === true ||
      (a.contentDisposition === "inline" && a.cid !== undefined);
    return {
      name:
        (a.filename ?? `part-${a.partId ?? i + 1}${extensionOf(a.contentType)}`)
          .slice(0, 255),
      type: a.contentType.slice(0, 128),
      content: new Uint8Array(content),
      ...(a.cid ? { content_id: a.cid.slice(0, 255) } : {}),
      ...(inline ? { inline: true } : {}),
    };
  });
  const date = parsed.date instanceof Date && !isNaN(parsed.date.getTime())
    ? parsed.date
    : undefined;
  return {
    message_id: bareId(parsed.messageId),
    from: from?.address ?? "",
    from_name: from?.name ?? "",
    to: addresses(parsed.to).map((a) => a.address),
    cc: addresses(parsed.cc).map((a) => a.address),
    subject: (parsed.subject ?? "").slice(0, MAX_SUBJECT),
    date,
    in_reply_to: ids(parsed.inReplyTo)[0],
    references,
    text: parsed.text ?? "",
    html,
    attachments,
    report,
    headers: (parsed.headerLines ?? []).slice(0, 100).map((
      h,
    ): [string, string] => [
      h.key.toLowerCase().slice(0, 76),
      h.line.slice(h.line.indexOf(":") + 1).replace(/\r?\n[ \t]+/g, " ")
        .trim().slice(0, 1000),
    ]),
  };
}

function extensionOf(type: string): string {
  const known: Record<string, string> = {
    "message/rfc822": ".eml",
    "message/delivery-status": ".txt",
    "text/rfc822-headers": ".txt",
    "text/plain": ".txt",
    "text/html": ".html",
    "image/png": ".png",
    "image/jpeg": ".jpg",
    "application/pdf": ".pdf",
  };
  return known[type.toLowerCase()] ?? ".bin";
}

/** An AMTP message to write as an Internet message. */
export interface ComposeInput {
  /** Sender address. */
  from: string;
  /** Sender's display name. */
  from_name?: string;
  /** To. */
  to: string[];
  /** Cc. */
  cc: string[];
  /** Subject. */
  subject: string;
  /** The body. */
  body: string;
  /** `text`, `markdown` (sent as plain text) or `html`. */
  format: string;
  /** When it was written. */
  date: Date;
  /** Its global id (the Message-ID, without brackets). */
  message_id: string;
  /** The global id it answers. */
  in_reply_to?: string | null;
  /** The global ids of its thread, oldest first (the thread's first message, then the one answered). */
  references?: string[];
  /** Its attachments. */
  attachments: MimeAttachment[];
  /** Extra header fields (name, value). */
  headers?: [string, string][];
}

/** HTML to plain text, roughly, for the text part of an HTML message. */
function htmlText(html: string): string {
  return html.replace(/<(script|style)[^>]*>[\s\S]*?<\/\1>/gi, "")
    .replace(/<br\s*\/?>|<\/p>|<\/div>|<\/li>/gi, "\n")
    .replace(/<[^>]+>/g, "")
    .replace(/&nbsp;/g, " ").replace(/&lt;/g, "<").replace(/&gt;/g, ">")
    .replace(/&quot;/g, '"').replace(/&#39;/g, "'").replace(/&amp;/g, "&")
    .replace(/\n{3,}/g, "\n\n").trim();
}

/** Write an AMTP message as an Internet message (RFC 5322, MIME); its bytes. */
export async function composeEmail(input: ComposeInput): Promise<Uint8Array> {
  const references = [
    ...new Set(
      [...(input.references ?? []), input.in_reply_to ?? ""].filter((r) => r),
    ),
  ];
  const html = input.format === "html";
  const mail = new MailComposer({
    from: input.from_name
      ? { name: input.from_name, address: input.from }
      : input.from,
    to: input.to,
    cc: input.cc.length ? input.cc : undefined,
    subject: input.subject,
    date: input.date,
    messageId: `<${input.message_id}>`,
    inReplyTo: input.in_reply_to ? `<${input.in_reply_to}>` : undefined,
    references: references.length
      ? references.map((r) => `<${r}>`).join(" ")
      : undefined,
    text: html ? htmlText(input.body) : input.body,
    html: html ? input.body : undefined,
    headers: input.headers?.map(([key, value]) => ({ key, value })),
    attachments: input.attachments.map((a) => ({
      filename: a.name,
      contentType: a.type,
      content: Buffer.from(
        a.content.buffer,
        a.content.byteOffset,
        a.content.byteLength,
      ),
      ...(a.content_id ? { cid: a.content_id } : {}),
      ...(a.inline ? { contentDisposition: "inline" as const } : {}),
    })),
  });
  const built = await new Promise<Uint8Array>((resolve, reject) =>
    mail.compile().build((error: Error | null, message: Uint8Array) =>
      error ? reject(error) : resolve(message)
    )
  );
  return new Uint8Array(built);
}
