/**
 * The CLI's mail commands: `send`, `inbox`, `read`, `search`, `watch`, with
 * attachments from and to files, and end-to-end encryption by default when
 * every recipient publishes a key.
 *
 * @module
 */

import { type Args, UsageError } from "./cli_args.ts";
import { FileTrustStore, loadDevice, planEncryption } from "./e2e_cli.ts";
import {
  AttachmentError,
  fetchAttachment,
  type MailAccount,
  mailAccount,
  type MessageCopy,
  openMessage,
  sendMessage,
} from "./mail.ts";
import { type AmtpClient, AmtpError, type Push } from "./mod.ts";
import { Progress } from "./progress.ts";
import { ErrorCode } from "../shared/errors.ts";

export { uploadBytes } from "./mail.ts";

/** A logged-in user's view of the messages module, in the CLI. */
export interface Mail extends MailAccount {
  /** The CLI session file (device keys and trust store live beside it). */
  stateFile: string;
}

/** Bind a client and user token to the messages module. */
export function mail(
  client: AmtpClient,
  user: { token: string; address: string; stateFile: string },
): Mail {
  return { ...mailAccount(client, user), stateFile: user.stateFile };
}

interface Summary {
  id: string;
  folder?: string;
  from: string;
  to?: string[];
  subject: string;
  date: Date;
  seen: boolean;
  flagged: boolean;
  attachments: number;
  encrypted: boolean;
}

function list(value: string | undefined): string[] {
  return (value ?? "").split(",").map((s) => s.trim()).filter(Boolean);
}

/** Where the CLI keeps the keys of correspondents it has seen. */
export function trustPath(stateFile: string): string {
  return `${stateFile.replace(/[^/]*$/, "") || "./"}trust.json`;
}

function mimeOf(name: string): string {
  const ext = name.slice(name.lastIndexOf(".") + 1).toLowerCase();
  const types: Record<string, string> = {
    txt: "text/plain",
    pdf: "application/pdf",
    png: "image/png",
    jpg: "image/jpeg",
    jpeg: "image/jpeg",
    gif: "image/gif",
    zip: "application/zip",
    json: "application/json",
  };
  return types[ext] ?? "application/octet-stream";
}

/** Thrown when a message is not sent because it would go out in clear without consent. */
export class NotSentError extends Error {
  /** Create the error. */
  constructor(message: string) {
    super(message);
    this.name = "NotSentError";
  }
}

/**
 * `amtp send --to A,B [--cc ..] [--bcc ..] --subject S (--body T | --body-file F) [--format f]
 * [--attach F1,F2] [--reply-to ID] [--client-id X] [--plain | --encrypt]`
 *
 * Encrypted end to end whenever every recipient has verified keys. When that
 * is impossible, it goes out in clear only if no recipient ever had keys and
 * `--encrypt` was not given; otherwise only with `--plain` (explicit consent).
 * Each Bcc recipient gets an envelope of its own.
 */
export async function sendCommand(
  m: Mail,
  args: Args,
  warn: (line: string) => void = (line) => console.error(line),
): Promise<string> {
  const to = list(args.flags.get("to"));
  const cc = list(args.flags.get("cc"));
  const bcc = list(args.flags.get("bcc"));
  if (to.length + cc.length + bcc.length === 0) {
    throw new UsageError(
      "usage: amtp send --to ADDRESS[,ADDRESS] --subject TEXT --body TEXT [--attach FILE,FILE] [--cc ..] [--bcc ..] [--plain | --encrypt]",
    );
  }
  const bodyFile = args.flags.get("body-file");
  const body = bodyFile
    ? await Deno.readTextFile(bodyFile)
    : args.flags.get("body") ?? "";
  const files = [];
  for (const path of list(args.flags.get("attach"))) {
    const name = path.slice(path.lastIndexOf("/") + 1);
    files.push({ name, type: mimeOf(name), data: await Deno.readFile(path) });
  }
  const trust = new FileTrustStore(trustPath(m.stateFile));
  const file = await loadDevice(m.stateFile, m.address);
  const plan = args.flags.has("plain")
    ? {
      encrypt: false as const,
      reason: "--plain was given",
      needsConsent: false,
    }
    : await planEncryption(m.client, {
      token: m.token,
      sender: m.address,
      file,
      to: [...to, ...cc],
      bcc,
      trust,
    });
  const notes: string[] = [];
  if (!plan.encrypt) {
    if (
      !args.flags.has("plain") &&
      (plan.needsConsent || args.flags.has("encrypt"))
    ) {
      throw new NotSentError(
        `NOT SENT: it cannot be encrypted: ${plan.reason}. ${
          args.flags.has("encrypt")
            ? "--encrypt requires encryption."
            : "A recipient had encryption keys before; to send it in clear anyway, add --plain."
        }`,
      );
    }
    const note =
      `NOT ENCRYPTED: ${plan.reason}; the servers can read this message`;
    warn(note);
    notes.push(note);
  }
  const result = await sendMessage(m, {
    to,
    cc,
    bcc,
    subject: args.flags.get("subject") ?? "",
    body,
    format: args.flags.get("format") ?? "text",
    attachments: files,
    inReplyTo: args.flags.get("reply-to"),
    clientId: args.flags.get("client-id"),
  }, {
    plan,
    device: file?.device,
    onProgress: progressBar(
      files.length === 1
        ? `upload ${files[0].name}`
        : `upload ${files.length} files`,
      files.reduce((n, f) => n + f.data.length, 0),
    ),
  });
  if (result.encrypted) {
    // Notes of the plan first, then what was done.
    const done = result.notes.pop()!;
    notes.push(...result.notes.map((n) => `note: ${n}`), done);
  }
  const lines = [...notes, `message ${result.message_id}`];
  for (const r of result.recipients) {
    lines.push(
      `  ${r.address}: ${r.status}${
        r.error ? ` (error ${r.error}: ${r.message})` : ""
      }`,
    );
  }
  return lines.join("\n");
}

/**
 * One message in a list: flags (New, Flagged, @ attachments, Encrypted), id,
 * date, who (the sender; the recipients in Sent), subject.
 */
function line(s: Summary): string {
  const flags = `${s.seen ? " " : "N"}${s.flagged ? "F" : " "}${
    s.attachments ? "@" : " "
  }${s.encrypted ? "E" : " "}`;
  const date = s.date.toISOString().slice(0, 16).replace("T", " ");
  const subject = s.encrypted && !s.subject ? "(encrypted)" : s.subject;
  const who = s.folder === "sent" ? `to ${(s.to ?? []).join(", ")}` : s.from;
  return `${flags} ${s.id.padEnd(30)} ${date}  ${who.padEnd(28)} ${subject}`;
}

/** `amtp inbox [--folder F] [--unseen] [--limit N] [--cursor C]` */
export async function inboxCommand(m: Mail, args: Args): Promise<string> {
  const page = await m.call<{ messages: Summary[]; cursor?: string }>("list", {
    folder: args.flags.get("folder") ?? "inbox",
    unseen: args.flags.has("unseen") || undefined,
    limit: args.flags.has("limit") ? Number(args.flags.get("limit")) : 30,
    cursor: args.flags.get("cursor"),
  });
  if (page.messages.length === 0) return "(no messages)";
  const lines = page.messages.map(line);
  if (page.cursor) lines.push(`more: --cursor ${page.cursor}`);
  return lines.join("\n");
}

/** What the CLI says of a message's encryption and signature. */
async function securityLines(
  m: Mail,
  msg: MessageCopy,
): Promise<
  { opened?: Awaited<ReturnType<typeof openMessage>>; lines: string[] }
> {
  if (!msg.encrypted || !(msg.body instanceof Uint8Array)) {
    return {
      lines: ["Encryption: none (the servers could read this message)"],
    };
  }
  const file = await loadDevice(m.stateFile, m.address);
  if (!file) {
    return {
      lines: [
        "Encryption: end to end; this device has no key to open it (amtp device init)",
      ],
    };
  }
  const result = await openMessage(m, msg, {
    device: file.device,
    legacyKeyId: file.legacyKeyId,
    trust: new FileTrustStore(trustPath(m.stateFile)),
  });
  if (!result.opened) {
    return {
      lines: [`Encryption: end to end, NOT readable: ${result.error}`],
    };
  }
  const lines = [
    "Encryption: end to end (AES-256-GCM, key sealed with HPKE X25519), decrypted",
  ];
  const sender = result.opened.sender;
  const who = `${sender}${
    result.deviceLabel !== undefined ? ` (device "${result.deviceLabel}")` : ""
  }`;
  if (result.signature === "invalid") {
    lines.push(
      "Signature: INVALID: the message was changed, or not signed by the key it names",
    );
    return { opened: result, lines };
  }
  if (result.signature === "unlisted") {
    lines.push(
      `Signature: valid, but the signing device is NOT in ${sender}'s device list (signed by its master key)`,
    );
  } else {
    lines.push(
      {
        "confirmed":
          `Signature: verified, key of ${who}, master key confirmed by you`,
        "known": `Signature: verified, key of ${who}, master key seen before`,
        "first-use":
          `Signature: verified, key of ${who}, master key seen for the first time (trusted on first use; compare the safety code: amtp verify ${sender})`,
        "changed":
          `Signature: verified, but ${sender} now has a NEW master key: compare the safety code (amtp verify ${sender}), then amtp trust ${sender}`,
        "rolled-back":
          `Signature: verified, but the server shows an OLDER device list of ${sender} than seen before (a revoked device may be back)`,
      }[result.trust!],
    );
  }
  for (const problem of result.problems) lines.push(`WARNING: ${problem}`);
  return { opened: result, lines };
}

/** `amtp read ID [--save DIR]`: show a message (decrypted when it can be), mark it seen, save attachments. */
export async function readCommand(m: Mail, args: Args): Promise<string> {
  const id = args.positional[1];
  if (!id) throw new UsageError("usage: amtp read MESSAGE_ID [--save DIR]");
  const msg = await m.call<MessageCopy>("get", { id });
  await m.call("mark", { ids: [id], seen: true });
  const { opened: result, lines: security } = await securityLines(m, msg);
  const opened = result?.opened;
  const secret = opened?.content;
  // What the sender signed is shown; the server's copy only where nothing is signed.
  const h = secret?.headers;
  const out = [
    `From:    ${h?.from ?? msg.from}`,
    `To:      ${(h?.to ?? msg.to).join(", ")}`,
  ];
  const cc = h?.cc ?? msg.cc;
  if (cc.length) out.push(`Cc:      ${cc.join(", ")}`);
  const bcc = h?.bcc ?? msg.bcc as string[];
  if (bcc.length) out.push(`Bcc:     ${bcc.join(", ")}`);
  out.push(
    `Date:    ${(h?.date ?? msg.date).toISOString()}`,
    `Subject: ${secret ? secret.subject : msg.subject}`,
  );
  if (msg.in_reply_to) out.push(`Reply to: ${msg.in_reply_to}`);
  out.push(`Format:  ${secret ? secret.format : msg.format}`, ...security, "");
  out.push(
    secret
      ? secret.body
      : msg.body instanceof Uint8Array
      ? `<${msg.body.byteLength} bytes of encrypted content>`
      : String(msg.body),
  );
  const dir = args.flags.get("save");
  for (const a of msg.attachments) {
    const inner = secret?.attachments?.find((x) => x.attachment_id === a.id);
    const name = inner?.name ?? a.name;
    const unsigned = secret && !inner;
    let saved = "";
    if (dir && !unsigned) {
      let fetched;
      try {
        fetched = await fetchAttachment(
          m,
          id,
          a,
          opened,
          progressBar(`download ${name}`, a.size),
        );
      } catch (error) {
        if (error instanceof AttachmentError) throw new Error(error.message);
        throw error;
      }
      const safe = name.replace(/[/\\\0]/g, "_").replace(/^\.+/, "_");
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeFile(`${dir.replace(/\/+$/, "")}/${safe}`, fetched.data);
      saved = ` -> ${dir.replace(/\/+$/, "")}/${safe} (checksum ok${
        fetched.decrypted ? ", decrypted" : ""
      })`;
    }
    out.push(
      `Attachment: ${name} (${a.size} bytes, sha256 ${
        a.sha256.slice(0, 16)
      }...)${unsigned ? " NOT SIGNED by the sender: not saved" : saved}`,
    );
  }
  return out.join("\n");
}

/** `amtp search QUERY [--from A] [--subject S] [--folder F]` */
export async function searchCommand(m: Mail, args: Args): Promise<string> {
  const query = args.positional[1];
  const from = args.flags.get("from");
  const subject = args.flags.get("subject");
  if (!query && !from && !subject) {
    throw new UsageError(
      "usage: amtp search TEXT [--from ADDRESS] [--subject TEXT]",
    );
  }
  const found = await m.call<{ messages: Summary[] }>("search", {
    query,
    from,
    subject,
    folder: args.flags.get("folder"),
  });
  return found.messages.length
    ? found.messages.map(line).join("\n")
    : "(nothing found)";
}

/** What `amtp watch` was asked. */
export interface WatchOptions {
  /** Stop (status 0) after this many new messages. */
  count?: number;
  /** Print only new messages, not other changes. */
  quiet?: boolean;
}

interface Change {
  seq: number;
  type: string;
  id: string;
  folder?: string;
  summary?: Summary;
}

/**
 * `amtp watch`: print messages as they arrive until interrupted. The
 * client keeps its session alive and reconnects; after a reconnect the
 * mailbox's changes since the last one seen are caught up, so nothing is
 * missed or printed twice. Resolves with the exit status: 0 after `count`
 * messages, 1 (with a message through `warn`) when the client gives up
 * reconnecting or the server no longer accepts the token.
 */
export async function watchCommand(
  m: Mail,
  options: WatchOptions,
  print: (text: string) => void,
  warn: (text: string) => void = (text) => console.error(text),
): Promise<number> {
  let cursor = (await m.call<{ seq: number }>("changes", {
    since: Number.MAX_SAFE_INTEGER,
  })).seq;
  print(
    `watching ${m.address} (mailbox at change ${cursor}); Ctrl-C to stop`,
  );
  let seen = 0;
  let finish!: (status: number) => void;
  const done = new Promise<number>((resolve) => finish = resolve);
  const showNew = (summary: Summary) => {
    print(`new: ${line(summary)}`);
    if (options.count !== undefined && ++seen >= options.count) finish(0);
  };
  const apply = (change: Change) => {
    if (change.seq <= cursor) return; // Already shown.
    cursor = change.seq;
    if (change.type === "new" && change.summary && change.folder !== "sent") {
      showNew(change.summary);
    } else if (!options.quiet) {
      print(
        `changed: ${change.type} ${change.id}${
          change.folder ? ` (${change.folder})` : ""
        }`,
      );
    }
  };
  // Pushes that arrive while catching up wait until it is done.
  let held: Push[] | undefined;
  const onPush = (push: Push) => {
    if (push.module !== "messages") return;
    if (push.account !== undefined && push.account !== m.address) return;
    if (held) {
      held.push(push);
      return;
    }
    const data = push.data as Summary & { seq: number; changes?: Change[] };
    if (push.event === "message_new") {
      apply({
        seq: data.seq,
        type: "new",
        id: data.id,
        folder: data.folder,
        summary: data,
      });
    } else if (push.event === "mailbox_changed") {
      for (const change of data.changes ?? []) apply(change);
    }
  };
  const catchUp = async () => {
    held = [];
    try {
      while (true) {
        const page = await m.call<
          { changes: Change[]; seq: number; reset: boolean; more: boolean }
        >("changes", { since: cursor });
        if (page.reset) {
          warn(
            `missed more changes than the server keeps: amtp inbox lists the mailbox`,
          );
          cursor = page.seq;
          break;
        }
        for (const change of page.changes) apply(change);
        if (!page.more) break;
      }
    } finally {
      const waiting = held;
      held = undefined;
      for (const push of waiting) onPush(push);
    }
  };
  m.client.onPush(onPush);
  m.client.onState((state) => {
    if (state === "closed") {
      warn(`watch stopped: ${m.client.closeReason ?? "the connection closed"}`);
      finish(1);
      return;
    }
    if (state !== "reconnected") return;
    warn(`reconnected; catching up from change ${cursor}`);
    catchUp().catch((error) => {
      if (
        error instanceof AmtpError && error.code === ErrorCode.NOT_LOGGED_IN
      ) {
        warn(
          `watch stopped: the server no longer accepts this session's token (${error.message}): amtp login again`,
        );
        finish(1);
      }
      // Otherwise the connection dropped again: the next reconnect catches up.
    });
  });
  return await done;
}

/** A progress callback drawing a bar on standard error (long transfers only). */
function progressBar(label: string, total: number) {
  const bar = new Progress(label, total);
  return (done: number) => bar.update(done);
}
