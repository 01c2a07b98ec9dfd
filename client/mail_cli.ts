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
  judgeSender,
  type Opened,
} from "./e2e.ts";
import {
  devicesFor,
  FileTrustStore,
  loadDevice,
  planEncryption,
} from "./e2e_cli.ts";
import type { AmtpClient } from "./mod.ts";

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
  };
}

interface Summary {
  id: string;
  from: string;
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
  for (let index = 0; index * size < data.byteLength; index++) {
    await m.call("attachment_upload_chunk", {
      upload_id: started.upload_id,
      index,
      data: data.subarray(index * size, (index + 1) * size),
    });
  }
  const done = await m.call<{ attachment_id: string }>(
    "attachment_upload_finish",
    { upload_id: started.upload_id },
  );
  return done.attachment_id;
}

/**
 * `amtp send --to A,B [--cc ..] [--bcc ..] --subject S (--body T | --body-file F) [--format f]
 * [--attach F1,F2] [--reply-to ID] [--client-id X] [--plain]`
 */
export async function sendCommand(m: Mail, args: Args): Promise<string> {
  const to = list(args.flags.get("to"));
  if (to.length === 0) {
    throw new UsageError(
      "usage: amtp send --to ADDRESS[,ADDRESS] --subject TEXT --body TEXT [--attach FILE,FILE] [--cc ..] [--bcc ..] [--plain]",
    );
  }
  const bodyFile = args.flags.get("body-file");
  const body = bodyFile
    ? await Deno.readTextFile(bodyFile)
    : args.flags.get("body") ?? "";
  const cc = list(args.flags.get("cc"));
  const bcc = list(args.flags.get("bcc"));
  const subject = args.flags.get("subject") ?? "";
  const format = args.flags.get("format") ?? "text";
  const files = list(args.flags.get("attach"));
  const device = await loadDevice(m.stateFile, m.address);
  const plan = args.flags.has("plain")
    ? { encrypt: false as const, reason: "--plain was given" }
    : await planEncryption(m.client, {
      token: m.token,
      sender: m.address,
      device,
      recipients: [...to, ...cc, ...bcc],
    });
  const notes: string[] = [];
  let params: Record<string, unknown>;
  if (plan.encrypt) {
    // One fresh content key for the body and every attachment.
    const contentKey = crypto.getRandomValues(new Uint8Array(32));
    const secretAttachments = [];
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
      });
    }
    const envelope = await encryptMessage({
      subject,
      body,
      format,
      attachments: secretAttachments,
    }, {
      sender: m.address,
      device: device!,
      recipients: plan.targets,
      contentKey,
    });
    const devices = plan.targets.reduce((n, t) => n + t.devices.length, 0);
    notes.push(
      `encrypted end to end for ${devices} device${
        devices === 1 ? "" : "s"
      } (the subject travels inside)`,
    );
    params = {
      subject: "",
      body: envelope,
      encrypted: true,
      format: "text",
      attachments,
    };
  } else {
    notes.push(
      `NOT ENCRYPTED: ${plan.reason}; the servers can read this message`,
    );
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
      ...params,
      to,
      cc,
      bcc,
      in_reply_to: args.flags.get("reply-to"),
      client_id: args.flags.get("client-id") ?? crypto.randomUUID(),
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

function line(s: Summary): string {
  const flags = `${s.seen ? " " : "N"}${s.flagged ? "F" : " "}${
    s.attachments ? "@" : " "
  }${s.encrypted ? "E" : " "}`;
  const date = s.date.toISOString().slice(0, 16).replace("T", " ");
  const subject = s.encrypted && !s.subject ? "(encrypted)" : s.subject;
  return `${flags} ${s.id.padEnd(30)} ${date}  ${s.from.padEnd(28)} ${subject}`;
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
  body: Uint8Array,
): Promise<{ opened?: Opened; lines: string[] }> {
  const device = await loadDevice(m.stateFile, m.address);
  if (!device) {
    return {
      lines: [
        "Encryption: end to end; this device has no key to open it (amtp device init)",
      ],
    };
  }
  let opened: Opened;
  try {
    opened = await decryptMessage(body, { address: m.address, device });
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
  const published = await devicesFor(m.client, m.token, opened.sender).catch(
    () => [],
  );
  const trust = await judgeSender(
    opened,
    published,
    new FileTrustStore(trustPath(m.stateFile)),
  );
  const device2 = published.find((d) =>
    d.key_id === opened.senderDevice.key_id
  );
  const who = `${opened.sender}${
    device2 ? ` (device "${device2.label}")` : ""
  }`;
  lines.push(
    {
      "confirmed": `Signature: verified, key of ${who}, confirmed by you`,
      "known": `Signature: verified, key of ${who}, seen before`,
      "first-use":
        `Signature: verified, key of ${who}, seen for the first time (trusted on first use)`,
      "changed":
        `Signature: verified, but ${opened.sender} now signs with a NEW key: check it, then amtp trust ${opened.sender}`,
      "unpublished":
        `Signature: valid, but the key is NOT one ${opened.sender} publishes`,
    }[trust],
  );
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
      ? await openEncrypted(m, msg.body)
      : {
        opened: undefined,
        lines: ["Encryption: none (the servers could read this message)"],
      };
  const secret = opened?.content;
  const out = [
    `From:    ${msg.from}`,
    `To:      ${(msg.to as string[]).join(", ")}`,
  ];
  if ((msg.cc as string[]).length) {
    out.push(`Cc:      ${(msg.cc as string[]).join(", ")}`);
  }
  if ((msg.bcc as string[]).length) {
    out.push(`Bcc:     ${(msg.bcc as string[]).join(", ")}`);
  }
  out.push(
    `Date:    ${(msg.date as Date).toISOString()}`,
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
    let saved = "";
    if (dir) {
      const parts: Uint8Array[] = [];
      let chunks = 1;
      for (let index = 0; index < chunks; index++) {
        const part = await m.call<{ data: Uint8Array; chunks: number }>(
          "attachment_get",
          { id, attachment_id: a.id, index },
        );
        chunks = part.chunks;
        parts.push(part.data);
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
      await Deno.writeFile(`${dir}/${safe}`, data);
      saved = ` -> ${dir}/${safe} (checksum ok${inner ? ", decrypted" : ""})`;
    }
    out.push(
      `Attachment: ${name} (${a.size} bytes, sha256 ${
        a.sha256.slice(0, 16)
      }...)${saved}`,
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

/** `amtp watch [--count N]`: print messages as they arrive, until interrupted. */
export async function watchCommand(
  m: Mail,
  args: Args,
  print: (text: string) => void,
): Promise<void> {
  const limit = args.flags.has("count")
    ? Number(args.flags.get("count"))
    : Infinity;
  let seen = 0;
  const { seq } = await m.call<{ seq: number }>("changes", {
    since: Number.MAX_SAFE_INTEGER,
  });
  print(`watching (mailbox at change ${seq}); Ctrl-C to stop`);
  await new Promise<void>((resolve) => {
    m.client.onPush((push) => {
      if (push.module !== "messages") return;
      const data = push.data as Summary & {
        seq: number;
        changes?: { type: string; id: string; folder?: string }[];
      };
      if (push.event === "message_new") {
        print(`new: ${line(data)}`);
        if (++seen >= limit) resolve();
      } else if (push.event === "mailbox_changed" && !args.flags.has("quiet")) {
        for (const c of data.changes ?? []) {
          print(
            `changed: ${c.type} ${c.id}${c.folder ? ` (${c.folder})` : ""}`,
          );
        }
      }
    });
    m.client.closed.then(() => resolve());
  });
}
