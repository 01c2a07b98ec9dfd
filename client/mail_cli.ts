/**
 * The CLI's mail commands: `send`, `inbox`, `read`, `search`, `watch`, with
 * attachments from and to files.
 *
 * @module
 */

import { type Args, UsageError } from "./cli_args.ts";
import type { AmtpClient } from "./mod.ts";

/** A logged-in user's view of the messages module. */
export interface Mail {
  /** The client. */
  client: AmtpClient;
  /** Call a messages command; `data` or throws. */
  call<T = Record<string, unknown>>(
    command: string,
    params?: Record<string, unknown>,
  ): Promise<T>;
}

/** Bind a client and user token to the messages module. */
export function mail(client: AmtpClient, token: string): Mail {
  return {
    client,
    call: (command, params = {}) =>
      client.call(command, {
        module: "messages",
        user_token: token,
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

async function sha256Hex(data: Uint8Array<ArrayBuffer>): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", data);
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
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

/** Upload a file in chunks; returns the attachment id. */
export async function uploadFile(m: Mail, path: string): Promise<string> {
  const data = await Deno.readFile(path);
  const name = path.slice(path.lastIndexOf("/") + 1);
  const started = await m.call<{ upload_id: string; chunk_size: number }>(
    "attachment_upload",
    {
      name,
      type: mimeOf(name),
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

/** `amtp send --to A,B [--cc ..] [--bcc ..] --subject S (--body T | --body-file F) [--format f] [--attach F1,F2] [--reply-to ID] [--client-id X]` */
export async function sendCommand(m: Mail, args: Args): Promise<string> {
  const to = list(args.flags.get("to"));
  if (to.length === 0) {
    throw new UsageError(
      "usage: amtp send --to ADDRESS[,ADDRESS] --subject TEXT --body TEXT [--attach FILE,FILE] [--cc ..] [--bcc ..]",
    );
  }
  const bodyFile = args.flags.get("body-file");
  const body = bodyFile
    ? await Deno.readTextFile(bodyFile)
    : args.flags.get("body") ?? "";
  const attachments = [];
  for (const path of list(args.flags.get("attach"))) {
    attachments.push(await uploadFile(m, path));
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
      cc: list(args.flags.get("cc")),
      bcc: list(args.flags.get("bcc")),
      subject: args.flags.get("subject") ?? "",
      body,
      format: args.flags.get("format") ?? "text",
      attachments,
      in_reply_to: args.flags.get("reply-to"),
      client_id: args.flags.get("client-id") ?? crypto.randomUUID(),
    },
  );
  const lines = [`message ${result.message_id}`];
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
  return `${flags} ${s.id.padEnd(30)} ${date}  ${
    s.from.padEnd(28)
  } ${s.subject}`;
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

/** `amtp read ID [--save DIR]`: show a message, mark it seen, save attachments. */
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
    `Subject: ${msg.subject}`,
  );
  if (msg.in_reply_to) out.push(`Reply to: ${msg.in_reply_to}`);
  out.push(`Format:  ${msg.format}${msg.encrypted ? " (encrypted)" : ""}`, "");
  out.push(
    msg.body instanceof Uint8Array
      ? `<${msg.body.byteLength} bytes of encrypted content>`
      : String(msg.body),
  );
  const dir = args.flags.get("save");
  for (const a of attachments) {
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
      const whole = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
      let at = 0;
      for (const p of parts) {
        whole.set(p, at);
        at += p.byteLength;
      }
      const sum = await sha256Hex(whole);
      if (sum !== a.sha256) {
        throw new Error(`attachment ${a.name}: checksum mismatch`);
      }
      const safe = a.name.replace(/[/\\\0]/g, "_").replace(/^\.+/, "_");
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeFile(`${dir}/${safe}`, whole);
      saved = ` -> ${dir}/${safe} (checksum ok)`;
    }
    out.push(
      `Attachment: ${a.name} (${a.size} bytes, sha256 ${
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
