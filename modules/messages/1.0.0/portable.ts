/**
 * Mailboxes in and out in mail's own formats, for `deno task admin export`
 * and `import`: mbox (mboxrd), Maildir and single `.eml` files, each folder
 * kept, with flags and dates, through the one MIME mapping of mime.ts (the
 * same that the SMTP gateway's mail takes, email.ts).
 *
 * - Export: a message that came as email is written byte for byte as it came;
 *   one written here is composed as the email it would have been (its global
 *   id as Message-ID, its thread in References). End-to-end encrypted
 *   messages have no plaintext here: they are counted, not written.
 * - Import: each message goes to the folder it was in (made when missing),
 *   with its flags; one whose Message-ID the mailbox already holds (as email
 *   or as an AMTP message) is skipped, so importing an export again, or
 *   resuming an interrupted import, adds nothing twice.
 *
 * Layouts, under the export folder:
 *
 * - `eml`: `<folder>/<copy id>.eml`;
 * - `maildir`: `<folder>/{cur,new,tmp}/<seconds>.<copy id>.amtp:2,<flags>`
 *   (flags `D` draft, `F` flagged, `R` answered, `S` seen);
 * - `mbox`: `<folder>.mbox`, flags in `Status:` (`R` seen) and `X-Status:`
 *   (`F` flagged, `A` answered, `D` draft).
 *
 * @module
 */

import type { ModuleStorage } from "../../../workers/sdk/mod.ts";
import { readBlob } from "./attachments.ts";
import {
  type EmailEnv,
  hasEmail,
  type Placement,
  storeEmail,
} from "./email.ts";
import { localMessageId, parseGlobalId } from "./ids.ts";
import { Mailbox, type MessageRecord, readBody } from "./mailbox.ts";
import { SYSTEM_FOLDERS } from "./params.ts";
import { composeEmail, parseEmail } from "./mime.ts";

/** The formats. */
export const FORMATS = ["mbox", "maildir", "eml"] as const;

/** A format of {@link FORMATS}. */
export type Format = typeof FORMATS[number];

/** What an export or import did. */
export interface Tally {
  /** Messages written, or stored. */
  done: number;
  /** Messages skipped (an import: already there; an export: encrypted). */
  skipped: number;
  /** Messages that could not be read or stored, with why. */
  failed: { what: string; why: string }[];
}

const decoder = new TextDecoder("latin1");

/** Every folder of a mailbox: the system ones, then the owner's. */
async function foldersOf(mailbox: Mailbox): Promise<string[]> {
  return [...SYSTEM_FOLDERS, ...(await mailbox.state()).state.folders];
}

/** Every copy of a folder, oldest first. */
async function* copiesOf(
  mailbox: Mailbox,
  folder: string,
): AsyncGenerator<MessageRecord> {
  const ids: string[] = [];
  let cursor: string | undefined;
  do {
    const page = await mailbox.list(folder, { limit: 200, cursor });
    ids.push(...page.messages.map((m) => m.id));
    cursor = page.cursor;
  } while (cursor);
  for (const id of ids.reverse()) {
    const entry = await mailbox.message(id);
    if (entry) yield entry.value;
  }
}

/** A copy as an Internet message; null for an encrypted one. */
async function rawOf(
  storage: ModuleStorage,
  mailbox: Mailbox,
  m: MessageRecord,
): Promise<Uint8Array | null> {
  if (m.email) return await readBlob(storage, m.email.source);
  if (m.encrypted) return null;
  const body = await readBody(storage, m.message_id);
  const answered = m.in_reply_to ? await mailbox.copyOf(m.in_reply_to) : null;
  const attachments = [];
  for (const a of m.attachments) {
    attachments.push({
      name: a.name,
      type: a.type,
      content: await readBlob(storage, a),
      ...(a.content_id ? { content_id: a.content_id } : {}),
      ...(a.inline ? { inline: true } : {}),
    });
  }
  return await composeEmail({
    from: m.from,
    to: m.to,
    cc: m.cc,
    subject: m.subject,
    body: typeof body === "string" ? body : "",
    format: m.format,
    date: m.date,
    message_id: m.global_id,
    in_reply_to: answered?.global_id ?? null,
    references: m.thread !== m.global_id ? [m.thread] : [],
    attachments,
    headers: m.bcc.length ? [["Bcc", m.bcc.join(", ")]] : [],
  });
}

/** IMAP-style flags of a copy. */
function flagsOf(m: MessageRecord): Set<string> {
  const flags = new Set(m.email?.flags ?? []);
  if (m.seen) flags.add("\\Seen");
  if (m.flagged) flags.add("\\Flagged");
  return flags;
}

/** Maildir letters of flags, sorted (as the format wants). */
function maildirLetters(flags: Set<string>): string {
  const letters: Record<string, string> = {
    "\\Draft": "D",
    "\\Flagged": "F",
    "\\Answered": "R",
    "\\Seen": "S",
  };
  return [...flags].map((f) => letters[f] ?? "").filter((l) => l).sort()
    .join("");
}

/** `From ` line date (asctime). */
function asctime(date: Date): string {
  const [day, month, d, year, time] = date.toUTCString().replace(",", "")
    .split(" ");
  return `${day} ${d} ${month} ${time} ${year}`.replace(
    /^(\w+) (\d+) (\w+) /,
    (_, wd, dd, mm) => `${wd} ${mm} ${String(Number(dd)).padStart(2, " ")} `,
  );
}

/** Export one mailbox into `dir` in `format`. */
export async function exportMailbox(
  storage: ModuleStorage,
  owner: string,
  format: Format,
  dir: string,
): Promise<Tally> {
  const mailbox = new Mailbox(storage, owner);
  const tally: Tally = { done: 0, skipped: 0, failed: [] };
  await Deno.mkdir(dir, { recursive: true });
  for (const folder of await foldersOf(mailbox)) {
    const mbox: Uint8Array[] = [];
    for await (const m of copiesOf(mailbox, folder)) {
      let raw: Uint8Array | null;
      try {
        raw = await rawOf(storage, mailbox, m);
      } catch (error) {
        tally.failed.push({ what: m.id, why: (error as Error).message });
        continue;
      }
      if (!raw) {
        tally.skipped++;
        continue;
      }
      const flags = flagsOf(m);
      if (format === "eml") {
        await Deno.mkdir(`${dir}/${folder}`, { recursive: true });
        await Deno.writeFile(`${dir}/${folder}/${m.id}.eml`, raw);
      } else if (format === "maildir") {
        for (const sub of ["cur", "new", "tmp"]) {
          await Deno.mkdir(`${dir}/${folder}/${sub}`, { recursive: true });
        }
        const name = `${Math.floor(m.date.getTime() / 1000)}.${m.id}.amtp:2,${
          maildirLetters(flags)
        }`;
        await Deno.writeFile(`${dir}/${folder}/cur/${name}`, raw);
      } else {
        mbox.push(mboxEntry(m, raw, flags));
      }
      tally.done++;
    }
    if (format === "mbox" && mbox.length) {
      await Deno.writeFile(`${dir}/${folder}.mbox`, concat(mbox));
    }
  }
  return tally;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** One mboxrd entry: the `From ` line, flags, the message with `From ` lines quoted. */
function mboxEntry(
  m: MessageRecord,
  raw: Uint8Array,
  flags: Set<string>,
): Uint8Array {
  const text = decoder.decode(raw).replace(/\r\n/g, "\n");
  const quoted = text.replace(/^(>*From )/gm, ">$1");
  const sender = m.email?.mail_from || m.from || "MAILER-DAEMON";
  const status = flags.has("\\Seen") ? "Status: RO\n" : "Status: O\n";
  const x = [
    flags.has("\\Flagged") ? "F" : "",
    flags.has("\\Answered") ? "A" : "",
    flags.has("\\Draft") ? "D" : "",
  ].join("");
  const entry = `From ${sender} ${asctime(m.date)}\n${status}${
    x ? `X-Status: ${x}\n` : ""
  }${quoted}${quoted.endsWith("\n") ? "" : "\n"}\n`;
  return Uint8Array.from(entry, (c) => c.charCodeAt(0));
}

/** A message found to import (in files, or on an IMAP server). */
export interface Found {
  /** Where it was (for reports). */
  what: string;
  /** Its bytes. */
  raw: Uint8Array;
  /** Its folder. */
  folder: string;
  /** Its flags. */
  flags: Set<string>;
  /** A date to fall back on (the file's). */
  date?: Date;
}

/** A folder name as the messages module allows it (`INBOX` is `inbox`). */
export function folderName(name: string): string {
  const clean = name.replace(/^\./, "").toLowerCase()
    .replace(/[^a-z0-9 _.-]+/g, "-").replace(/^[-.]+|[-.]+$/g, "")
    .slice(0, 64);
  return clean || "inbox";
}

/** Messages of a Maildir folder (`cur` and `new`). */
async function* maildir(path: string, folder: string): AsyncGenerator<Found> {
  for (const sub of ["cur", "new"]) {
    let entries: Deno.DirEntry[] = [];
    try {
      entries = await Array.fromAsync(Deno.readDir(`${path}/${sub}`));
    } catch {
      continue;
    }
    entries.sort((a, b) => a.name.localeCompare(b.name));
    for (const entry of entries) {
      if (!entry.isFile) continue;
      const file = `${path}/${sub}/${entry.name}`;
      const info = entry.name.match(/:2,([A-Za-z]*)$/)?.[1] ?? "";
      const flags = new Set<string>();
      if (info.includes("S")) flags.add("\\Seen");
      if (info.includes("F")) flags.add("\\Flagged");
      if (info.includes("R")) flags.add("\\Answered");
      if (info.includes("D")) flags.add("\\Draft");
      if (info.includes("T")) continue; // trashed: to be expunged
      yield {
        what: file,
        raw: await Deno.readFile(file),
        folder,
        flags,
        date: (await Deno.stat(file)).mtime ?? undefined,
      };
    }
  }
}

/** Messages of an mbox file (mboxrd or mboxo). */
async function* mbox(file: string, folder: string): AsyncGenerator<Found> {
  const text = decoder.decode(await Deno.readFile(file));
  const parts = text.split(/^From [^\n]*\n/m).slice(1);
  for (const [i, part] of parts.entries()) {
    let body = part.replace(/\n$/, "").replace(/^>(>*From )/gm, "$1");
    const head = body.slice(0, body.search(/\r?\n\r?\n/) + 1);
    const status = head.match(/^Status: *(\w*)/mi)?.[1] ?? "";
    const x = head.match(/^X-Status: *(\w*)/mi)?.[1] ?? "";
    body = body.replace(/^(X-)?Status: *\w*\r?\n/gmi, "");
    const flags = new Set<string>();
    if (status.includes("R")) flags.add("\\Seen");
    if (x.includes("F")) flags.add("\\Flagged");
    if (x.includes("A")) flags.add("\\Answered");
    if (x.includes("D")) flags.add("\\Draft");
    yield {
      what: `${file} #${i + 1}`,
      raw: Uint8Array.from(body, (c) => c.charCodeAt(0) & 0xff),
      folder,
      flags,
    };
  }
}

/** Everything under `path`: a file (`.eml`, mbox), a Maildir, or a folder of them. */
async function* found(path: string, folder = "inbox"): AsyncGenerator<Found> {
  const info = await Deno.stat(path);
  const base = path.replace(/\/+$/, "").split("/").pop() ?? "";
  if (info.isFile) {
    const head = new Uint8Array(5);
    const file = await Deno.open(path);
    try {
      await file.read(head);
    } finally {
      file.close();
    }
    if (decoder.decode(head) === "From ") {
      yield* mbox(path, folderName(base.replace(/\.mbox$/i, "")));
    } else {
      yield {
        what: path,
        raw: await Deno.readFile(path),
        folder,
        flags: new Set(),
        date: info.mtime ?? undefined,
      };
    }
    return;
  }
  const names = (await Array.fromAsync(Deno.readDir(path)))
    .sort((a, b) => a.name.localeCompare(b.name));
  if (names.some((e) => e.isDirectory && e.name === "cur")) {
    yield* maildir(path, folder);
    return;
  }
  for (const entry of names) {
    if (entry.name === "tmp" || entry.name.startsWith(".") && entry.isFile) {
      continue;
    }
    const child = `${path}/${entry.name}`;
    yield* found(child, entry.isDirectory ? folderName(entry.name) : folder);
  }
}

/** Whether the mailbox holds a message with this Message-ID, as email or as an AMTP message. */
async function holds(
  env: EmailEnv,
  owner: string,
  messageId: string,
): Promise<boolean> {
  if (await hasEmail(env.storage, owner, messageId)) return true;
  const global = parseGlobalId(messageId);
  if (!global) return false;
  const hosted = await env.hosted([global.domain]);
  const copy = await new Mailbox(env.storage, owner).copyOf(
    localMessageId(global, hosted.has(global.domain)),
  );
  return copy !== null && copy.global_id === messageId;
}

/** Import the messages under `path` into `owner`'s mailbox. */
export async function importMail(
  env: EmailEnv,
  owner: string,
  quota: number,
  path: string,
): Promise<Tally> {
  return await importFound(env, owner, quota, found(path));
}

/** Import messages from `source` into `owner`'s mailbox, each into its folder. */
export async function importFound(
  env: EmailEnv,
  owner: string,
  quota: number,
  source: AsyncIterable<Found>,
): Promise<Tally> {
  const tally: Tally = { done: 0, skipped: 0, failed: [] };
  for await (const item of source) {
    try {
      const parsed = await parseEmail(item.raw);
      const id = parsed.message_id;
      if (id && await holds(env, owner, id)) {
        tally.skipped++;
        continue;
      }
      const placement: Placement = {
        owner,
        quota,
        folder: item.folder,
        seen: item.flags.has("\\Seen"),
        flagged: item.flags.has("\\Flagged"),
        flags: [...item.flags].filter((f) =>
          f !== "\\Seen" && f !== "\\Flagged"
        ),
      };
      const [outcome] = await storeEmail(env, {
        raw: item.raw,
        placements: [placement],
        date: parsed.date ?? item.date ?? new Date(),
      }, parsed);
      if (outcome === "quota") {
        tally.failed.push({ what: item.what, why: "the mailbox is full" });
      } else if (typeof outcome === "object") tally.done++;
      else tally.skipped++;
    } catch (error) {
      tally.failed.push({ what: item.what, why: (error as Error).message });
    }
  }
  return tally;
}
