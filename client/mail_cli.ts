/**
 * The CLI's mail commands: `send`, `inbox`, `read`, `search`, `watch`, with
 * attachments from and to files, and end-to-end encryption by default when
 * every recipient publishes a key.
 *
 * @module
 */

import { type Args, UsageError } from "./cli_args.ts";
import {
  decryptAttachment,
  decryptMessage,
  E2eError,
  encryptAttachment,
  encryptMessage,
  headerMismatches,
  judgeContact,
  type Opened,
  type SecretAttachment,
  type Target,
} from "./e2e.ts";
import {
  FileTrustStore,
  keysOf,
  loadDevice,
  planEncryption,
} from "./e2e_cli.ts";
import { type AmtpClient, AmtpError, type Push } from "./mod.ts";
import { Progress } from "./progress.ts";

/** A logged-in user's view of the messages module. */
export interface Mail {
  /** The client. */
  client: AmtpClient;
  /** The user token. */
  token: string;
  /** The user's address. */
  address: string;
  /** The CLI session file (device keys and trust store live beside it). */
  stateFile: string;
  /** Call a messages command; `data` or throws. */
  call<T = Record<string, unknown>>(
    command: string,
    params?: Record<string, unknown>,
  ): Promise<T>;
  /** {@link call} on the transfer lane (chunks of uploads and downloads). */
  transfer<T = Record<string, unknown>>(
    command: string,
    params?: Record<string, unknown>,
  ): Promise<T>;
}

/** Bind a client and user token to the messages module. */
export function mail(
  client: AmtpClient,
  user: { token: string; address: string; stateFile: string },
): Mail {
  return {
    client,
    ...user,
    call: (command, params = {}) =>
      client.call(command, {
        module: "messages",
        user_token: user.token,
        ...params,
      }),
    transfer: async <T>(command: string, params = {}) => {
      const response = await client.transferRequest(command, {
        module: "messages",
        user_token: user.token,
        ...params,
      });
      if (response.error !== 0) throw new AmtpError(response);
      return response.data as T;
    },
  };
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

async function sha256Hex(data: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new Uint8Array(data) as Uint8Array<ArrayBuffer>,
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
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

/** Upload bytes in chunks; returns the attachment id. */
export async function uploadBytes(
  m: Mail,
  data: Uint8Array,
  name: string,
  type: string,
): Promise<string> {
  const started = await m.call<{ upload_id: string; chunk_size: number }>(
    "attachment_upload",
    {
      name,
      type,
      size: data.byteLength,
      sha256: await sha256Hex(data),
    },
  );
  const size = started.chunk_size;
  const bar = new Progress(`upload ${name}`, data.byteLength);
  for (let index = 0; index * size < data.byteLength; index++) {
    await m.transfer("attachment_upload_chunk", {
      upload_id: started.upload_id,
      index,
      data: data.subarray(index * size, (index + 1) * size),
    });
    bar.update(Math.min(data.byteLength, (index + 1) * size));
  }
  const done = await m.call<{ attachment_id: string }>(
    "attachment_upload_finish",
    { upload_id: started.upload_id },
  );
  return done.attachment_id;
}

/** The message id the messages module derives from a sender and a client id (PROTOCOL.md §13.1). */
async function messageIdOf(sender: string, clientId: string): Promise<string> {
  return (await sha256Hex(new TextEncoder().encode(`${sender}\n${clientId}`)))
    .slice(0, 24);
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
  const subject = args.flags.get("subject") ?? "";
  const format = args.flags.get("format") ?? "text";
  const files = list(args.flags.get("attach"));
  const clientId = args.flags.get("client-id") ?? crypto.randomUUID();
  const replyTo = args.flags.get("reply-to");
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
  let params: Record<string, unknown>;
  if (plan.encrypt) {
    notes.push(...plan.notes.map((n) => `note: ${n}`));
    const device = file!.device;
    // One content key for every envelope of this message and its attachments.
    const contentKey = crypto.getRandomValues(new Uint8Array(32));
    const secretAttachments: SecretAttachment[] = [];
    const attachments = [];
    for (const path of files) {
      const plain = await Deno.readFile(path);
      const sealed = await encryptAttachment(contentKey, plain);
      const name = path.slice(path.lastIndexOf("/") + 1);
      const id = await uploadBytes(
        m,
        sealed.data,
        "encrypted.bin",
        "application/octet-stream",
      );
      attachments.push(id);
      secretAttachments.push({
        attachment_id: id,
        name,
        type: mimeOf(name),
        nonce: sealed.nonce,
        sha256: await sha256Hex(plain),
        stored_sha256: await sha256Hex(sealed.data),
      });
    }
    const sender = m.address.toLowerCase();
    const domain = sender.slice(sender.lastIndexOf("@") + 1);
    const messageId = `${await messageIdOf(sender, clientId)}@${domain}`;
    let inReplyTo: string | null = null;
    if (replyTo) {
      const parent = await m.call<{ global_id?: string }>("get", {
        id: replyTo,
      });
      inReplyTo = parent.global_id ?? null;
    }
    const headers = {
      to: to.map((a) => a.toLowerCase()),
      cc: cc.map((a) => a.toLowerCase()),
      date: new Date(),
      message_id: messageId,
      in_reply_to: inReplyTo,
    };
    const seal = (
      recipients: Target[],
      extra: { bcc?: string[]; message_id?: string } = {},
    ) =>
      encryptMessage({
        subject,
        body,
        format,
        attachments: secretAttachments,
      }, {
        sender,
        device,
        recipients,
        headers: { ...headers, ...extra },
        contentKey,
      });
    const envelope = await seal(plan.targets);
    // Each Bcc recipient's own message: its id is derived as the messages
    // module derives it (PROTOCOL.md §13.1), so its signed id matches.
    const bccBodies = [];
    for (const b of plan.bcc) {
      const bccId = `${messageId.slice(0, messageId.indexOf("@"))}-${
        (await sha256Hex(
          new TextEncoder().encode(
            `AMTP bcc\n${
              messageId.slice(0, messageId.indexOf("@"))
            }\n${b.address}`,
          ),
        )).slice(0, 16)
      }@${domain}`;
      bccBodies.push(
        await seal(b.targets, { bcc: [b.address], message_id: bccId }),
      );
    }
    const devices = plan.targets.reduce((n, t) => n + t.devices.length, 0);
    notes.push(
      `encrypted end to end for ${devices} device${devices === 1 ? "" : "s"}${
        plan.bcc.length
          ? ` and ${plan.bcc.length} Bcc envelope${
            plan.bcc.length === 1 ? "" : "s"
          }`
          : ""
      } (the subject and headers travel inside)`,
    );
    params = {
      subject: "",
      body: envelope,
      encrypted: true,
      format: "text",
      attachments,
      // The Bcc addresses as planned (deduplicated), in the order of their bodies.
      bcc: plan.bcc.map((b) => b.address),
      ...(bccBodies.length ? { bcc_bodies: bccBodies } : {}),
    };
  } else {
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
    const attachments = [];
    for (const path of files) {
      const name = path.slice(path.lastIndexOf("/") + 1);
      attachments.push(
        await uploadBytes(m, await Deno.readFile(path), name, mimeOf(name)),
      );
    }
    params = { subject, body, format, attachments };
  }
  const result = await m.call<
    {
      message_id: string;
      recipients: {
        address: string;
        status: string;
        error?: number;
        message?: string;
      }[];
    }
  >(
    "send",
    {
      to,
      cc,
      bcc,
      ...params,
      in_reply_to: replyTo,
      client_id: clientId,
    },
  );
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

async function openEncrypted(
  m: Mail,
  msg: Record<string, unknown>,
): Promise<{ opened?: Opened; lines: string[] }> {
  const file = await loadDevice(m.stateFile, m.address);
  if (!file) {
    return {
      lines: [
        "Encryption: end to end; this device has no key to open it (amtp device init)",
      ],
    };
  }
  let opened: Opened;
  try {
    opened = await decryptMessage(msg.body as Uint8Array, {
      address: m.address,
      device: file.device,
      legacyKeyId: file.legacyKeyId,
    });
  } catch (error) {
    return {
      lines: [
        `Encryption: end to end, NOT readable: ${
          error instanceof E2eError ? error.message : String(error)
        }`,
      ],
    };
  }
  const lines = [
    "Encryption: end to end (AES-256-GCM, key sealed with HPKE X25519), decrypted",
  ];
  if (!opened.signatureValid) {
    lines.push(
      "Signature: INVALID: the message was changed, or not signed by the key it names",
    );
    return { opened, lines };
  }
  const trust = new FileTrustStore(trustPath(m.stateFile));
  const keys = await keysOf(m.client, m.token, opened.sender).catch(() =>
    undefined
  );
  const list = keys?.list;
  const device = list?.devices.find((d) =>
    d.id === opened.senderDevice.id &&
    d.sign.every((b, i) => b === opened.senderDevice.sign[i])
  );
  const who = `${opened.sender}${device ? ` (device "${device.label}")` : ""}`;
  if (!list || !device) {
    lines.push(
      `Signature: valid, but the signing device is NOT in ${opened.sender}'s device list (signed by its master key)`,
    );
  } else {
    const judged = await judgeContact(list, trust);
    lines.push(
      {
        "confirmed":
          `Signature: verified, key of ${who}, master key confirmed by you`,
        "known": `Signature: verified, key of ${who}, master key seen before`,
        "first-use":
          `Signature: verified, key of ${who}, master key seen for the first time (trusted on first use; compare the safety code: amtp verify ${opened.sender})`,
        "changed":
          `Signature: verified, but ${opened.sender} now has a NEW master key: compare the safety code (amtp verify ${opened.sender}), then amtp trust ${opened.sender}`,
        "rolled-back":
          `Signature: verified, but the server shows an OLDER device list of ${opened.sender} than seen before (a revoked device may be back)`,
      }[judged],
    );
  }
  // The server's copy against what the sender signed.
  const headers = opened.content.headers;
  let parent: string | null | undefined = undefined;
  if (headers) {
    parent = null;
    if (msg.in_reply_to) {
      const p = await m.call<{ global_id?: string }>("get", {
        id: msg.in_reply_to,
      }).catch(() => undefined);
      parent = p?.global_id ?? String(msg.in_reply_to);
    }
  }
  const problems = headerMismatches(opened, {
    global_id: msg.global_id as string | undefined,
    from: String(msg.from),
    to: msg.to as string[],
    cc: msg.cc as string[],
    date: msg.date as Date,
    attachments: msg.attachments as { id: string; sha256: string }[],
  }, parent);
  if (headers && typeof msg.id === "string") {
    const first = await trust.seen(opened.sender, headers.message_id, msg.id);
    if (first !== msg.id) {
      problems.push(
        `the same signed message arrived before as ${first}: this copy is a replay`,
      );
    }
  }
  for (const problem of problems) lines.push(`WARNING: ${problem}`);
  return { opened, lines };
}

/** `amtp read ID [--save DIR]`: show a message (decrypted when it can be), mark it seen, save attachments. */
export async function readCommand(m: Mail, args: Args): Promise<string> {
  const id = args.positional[1];
  if (!id) throw new UsageError("usage: amtp read MESSAGE_ID [--save DIR]");
  const msg = await m.call<Record<string, unknown>>("get", { id });
  await m.call("mark", { ids: [id], seen: true });
  const attachments = msg.attachments as {
    id: string;
    name: string;
    size: number;
    sha256: string;
  }[];
  const { opened, lines: security } =
    msg.encrypted && msg.body instanceof Uint8Array
      ? await openEncrypted(m, msg)
      : {
        opened: undefined,
        lines: ["Encryption: none (the servers could read this message)"],
      };
  const secret = opened?.content;
  // What the sender signed is shown; the server's copy only where nothing is signed.
  const h = secret?.headers;
  const out = [
    `From:    ${h?.from ?? msg.from}`,
    `To:      ${(h?.to ?? msg.to as string[]).join(", ")}`,
  ];
  const cc = h?.cc ?? msg.cc as string[];
  if (cc.length) out.push(`Cc:      ${cc.join(", ")}`);
  const bcc = h?.bcc ?? msg.bcc as string[];
  if (bcc.length) out.push(`Bcc:     ${bcc.join(", ")}`);
  out.push(
    `Date:    ${(h?.date ?? msg.date as Date).toISOString()}`,
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
  for (const a of attachments) {
    const inner = secret?.attachments?.find((x) => x.attachment_id === a.id);
    const name = inner?.name ?? a.name;
    const unsigned = secret && !inner;
    let saved = "";
    if (dir && !unsigned) {
      const parts: Uint8Array[] = [];
      let chunks = 1;
      let received = 0;
      const bar = new Progress(`download ${name}`, a.size);
      for (let index = 0; index < chunks; index++) {
        const part = await m.transfer<{ data: Uint8Array; chunks: number }>(
          "attachment_get",
          { id, attachment_id: a.id, index },
        );
        chunks = part.chunks;
        parts.push(part.data);
        bar.update(received += part.data.byteLength);
      }
      let data = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
      let at = 0;
      for (const p of parts) {
        data.set(p, at);
        at += p.byteLength;
      }
      if (await sha256Hex(data) !== a.sha256) {
        throw new Error(`attachment ${name}: checksum mismatch`);
      }
      if (inner && opened) {
        data = new Uint8Array(
          await decryptAttachment(opened.contentKey, inner.nonce, data),
        );
        if (await sha256Hex(data) !== inner.sha256) {
          throw new Error(`attachment ${name}: checksum mismatch`);
        }
      }
      const safe = name.replace(/[/\\\0]/g, "_").replace(/^\.+/, "_");
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeFile(`${dir.replace(/\/+$/, "")}/${safe}`, data);
      saved = ` -> ${dir.replace(/\/+$/, "")}/${safe} (checksum ok${
        inner ? ", decrypted" : ""
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
    warn(`reconnected; catching up from change ${cursor}`);
    catchUp().catch((error) => {
      if (error instanceof AmtpError && error.code === 5) {
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
