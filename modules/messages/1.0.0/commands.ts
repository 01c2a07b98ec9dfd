/**
 * The messages module's commands on mailboxes (and `send`), one function
 * each; mod.ts names them. See docs/PROTOCOL.md, section 13.2.
 *
 * @module
 */

import { type ModuleContext, ModuleError } from "../../../workers/sdk/mod.ts";
import { Attachments } from "./attachments.ts";
import {
  type Change,
  Mailbox,
  type MessageRecord,
  readBody,
  releaseCopies,
} from "./mailbox.ts";
import {
  bytes,
  bytesList,
  folderName,
  optBool,
  optInt,
  optStr,
  type Params,
  str,
  strList,
  SYSTEM_FOLDERS,
} from "./params.ts";
import { MAX_BODY, MAX_RECIPIENTS, send } from "./send.ts";
import {
  BadCursor,
  FIELD,
  type QueryWord,
  searchIndex,
  words,
} from "./search_index.ts";
import { quotaDefault } from "./settings.ts";

/** Ids one mark, move or delete may name. */
const MAX_IDS = 50;
/** Words of one search (query, from and subject together). */
const MAX_WORDS = 8;

function ids(p: Params): string[] {
  const list = strList(p, "ids", MAX_IDS, 64);
  if (list.length === 0) {
    throw new ModuleError(
      "invalid_parameter",
      'parameter "ids" needs at least one id',
      { parameter: "ids" },
    );
  }
  return list;
}

async function notify(ctx: ModuleContext, changes: Change[]): Promise<void> {
  if (changes.length === 0) return;
  await ctx.push(ctx.caller.address, "mailbox_changed", {
    seq: changes.at(-1)!.seq,
    changes,
  });
}

/** Tell the caller's sessions what changed; the answer of `mark` and `move`. */
async function changed(
  ctx: ModuleContext,
  result: { changes: Change[]; missing: string[] },
): Promise<unknown> {
  await notify(ctx, result.changes);
  return {
    changed: result.changes.length,
    missing: result.missing,
    seq: result.changes.at(-1)?.seq,
  };
}

/** `send`. */
export async function sendCommand(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const encrypted = optBool(p, "encrypted") ?? false;
  const body = p.body instanceof Uint8Array
    ? bytes(p, "body", MAX_BODY)
    : optStr(p, "body", MAX_BODY) ?? "";
  if (body instanceof Uint8Array && !encrypted) {
    throw new ModuleError(
      "invalid_parameter",
      'a binary body needs "encrypted": true',
      { parameter: "body" },
    );
  }
  const format = optStr(p, "format", 16) ?? "text";
  if (!["text", "markdown", "html"].includes(format)) {
    throw new ModuleError(
      "invalid_parameter",
      'parameter "format" is text, markdown or html',
      { parameter: "format" },
    );
  }
  const bcc = strList(p, "bcc", MAX_RECIPIENTS);
  const bccBodies = p.bcc_bodies === undefined || p.bcc_bodies === null
    ? undefined
    : bytesList(p, "bcc_bodies", MAX_RECIPIENTS, MAX_BODY);
  if (bccBodies && (!encrypted || bccBodies.length !== bcc.length)) {
    throw new ModuleError(
      "invalid_parameter",
      '"bcc_bodies" needs "encrypted": true and one body per bcc address',
      { parameter: "bcc_bodies" },
    );
  }
  const files = new Attachments(ctx.storage, ctx.caller.address);
  const attachments = [];
  for (const id of strList(p, "attachments", 20, 64)) {
    attachments.push(await files.own(id));
  }
  return await send(
    {
      to: strList(p, "to", MAX_RECIPIENTS),
      cc: strList(p, "cc", MAX_RECIPIENTS),
      bcc,
      subject: optStr(p, "subject", 1000) ?? "",
      body,
      bcc_bodies: bccBodies,
      format,
      attachments,
      in_reply_to: optStr(p, "in_reply_to", 64) ?? null,
      client_id: optStr(p, "client_id", 128),
      encrypted,
    },
    ctx,
    quotaDefault(),
  );
}

/** `folders`. */
export async function folders(
  _p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const { state } = await new Mailbox(ctx.storage, ctx.caller.address)
    .state();
  const names = [...SYSTEM_FOLDERS, ...state.folders];
  return {
    folders: names.map((name) => ({
      name,
      system: (SYSTEM_FOLDERS as readonly string[]).includes(name),
      total: state.counts[name]?.total ?? 0,
      unseen: state.counts[name]?.unseen ?? 0,
    })),
    seq: state.seq,
  };
}

/** `folder_create`. */
export async function folderCreate(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const name = folderName(p);
  await new Mailbox(ctx.storage, ctx.caller.address).createFolder(name);
  return { folder: name };
}

/** `folder_delete`. */
export async function folderDelete(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const name = folderName(p);
  await new Mailbox(ctx.storage, ctx.caller.address).deleteFolder(name);
  return { folder: name };
}

/** `list`. */
export async function listMessages(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const mailbox = new Mailbox(ctx.storage, ctx.caller.address);
  const folder = p.folder === undefined ? "inbox" : folderName(p);
  if (!(await mailbox.hasFolder(folder))) {
    throw new ModuleError("not_found", `no folder "${folder}"`);
  }
  return await mailbox.list(folder, {
    limit: optInt(p, "limit", 1, 200) ?? 50,
    cursor: optStr(p, "cursor", 1024),
    unseen: optBool(p, "unseen") ?? false,
  });
}

/** `get`. */
export async function getMessage(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const mailbox = new Mailbox(ctx.storage, ctx.caller.address);
  const entry = await mailbox.message(str(p, "id", 64));
  if (!entry) throw new ModuleError("not_found", `no message ${p.id}`);
  const body = await readBody(ctx.storage, entry.value.message_id);
  const { owner: _, ...message } = entry.value;
  return { ...message, body: body ?? "" };
}

/** `mark`. */
export async function mark(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const seen = optBool(p, "seen");
  const flagged = optBool(p, "flagged");
  if (seen === undefined && flagged === undefined) {
    throw new ModuleError("invalid_parameter", 'give "seen" or "flagged"', {
      parameter: "seen",
    });
  }
  return await changed(
    ctx,
    await new Mailbox(ctx.storage, ctx.caller.address).update(ids(p), {
      seen,
      flagged,
    }),
  );
}

/** `move`. */
export async function move(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const mailbox = new Mailbox(ctx.storage, ctx.caller.address);
  const folder = folderName(p);
  if (!(await mailbox.hasFolder(folder))) {
    throw new ModuleError("not_found", `no folder "${folder}"`);
  }
  return await changed(ctx, await mailbox.update(ids(p), { folder }));
}

/** `delete`. */
export async function deleteMessages(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const mailbox = new Mailbox(ctx.storage, ctx.caller.address);
  const list = ids(p);
  const permanent = optBool(p, "permanent") ?? false;
  // Messages not yet in Trash go there; those in Trash (or all, when
  // permanent) are deleted for good.
  const toTrash: string[] = [];
  const forGood: string[] = [];
  for (const id of list) {
    const entry = await mailbox.message(id);
    if (!entry) continue;
    if (permanent || entry.value.folder === "trash") forGood.push(id);
    else toTrash.push(id);
  }
  const moved = toTrash.length
    ? await mailbox.update(toTrash, { folder: "trash" })
    : { changes: [] as Change[] };
  const removed = forGood.length
    ? await mailbox.update(forGood, { remove: true })
    : { changes: [] as Change[], removed: [] as MessageRecord[] };
  await releaseCopies(ctx.storage, removed.removed);
  const changes = [...moved.changes, ...removed.changes];
  await notify(ctx, changes);
  return {
    trashed: moved.changes.length,
    deleted: removed.changes.length,
    missing: list.filter((id) =>
      !toTrash.includes(id) && !forGood.includes(id)
    ),
    seq: changes.at(-1)?.seq,
  };
}

/** `thread`. */
export async function thread(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const mailbox = new Mailbox(ctx.storage, ctx.caller.address);
  const entry = await mailbox.message(str(p, "id", 64));
  if (!entry) throw new ModuleError("not_found", `no message ${p.id}`);
  return {
    thread: entry.value.thread,
    messages: await mailbox.thread(entry.value.thread),
  };
}

/** `search`: the mailbox's search index (search_index.ts). */
export async function search(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const query = optStr(p, "query", 200);
  const from = optStr(p, "from", 320);
  const subject = optStr(p, "subject", 200);
  const wordList: QueryWord[] = [
    ...words(query ?? "").map((text) => ({ text, fields: 15 })),
    ...words(from ?? "").map((text) => ({ text, fields: FIELD.from })),
    ...words(subject ?? "").map((text) => ({ text, fields: FIELD.subject })),
  ].slice(0, MAX_WORDS);
  if (wordList.length === 0) {
    throw new ModuleError(
      "invalid_parameter",
      'give "query", "from" or "subject" with at least one word',
      { parameter: "query" },
    );
  }
  try {
    return await searchIndex(ctx.storage, ctx.caller.address, {
      words: wordList,
      folder: p.folder === undefined ? undefined : folderName(p),
      limit: optInt(p, "limit", 1, 200) ?? 50,
      cursor: optStr(p, "cursor", 1024),
    });
  } catch (error) {
    if (!(error instanceof BadCursor)) throw error;
    throw new ModuleError(
      "invalid_parameter",
      'parameter "cursor" is not a cursor this search gave',
      { parameter: "cursor" },
    );
  }
}

/** `changes`. */
export async function changes(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const since = optInt(p, "since", 0, Number.MAX_SAFE_INTEGER) ?? 0;
  const limit = optInt(p, "limit", 1, 1000) ?? 500;
  return await new Mailbox(ctx.storage, ctx.caller.address).changes(
    since,
    limit,
  );
}

/** `quota`. */
export async function quota(
  _p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const { state } = await new Mailbox(ctx.storage, ctx.caller.address)
    .state();
  const mine = (await ctx.accounts.resolve([ctx.caller.address]))[0]
    ?.mailboxes[0]
    ?.quota;
  return { used: state.used, limit: mine || quotaDefault() };
}

/**
 * `recipients`: where mail to these addresses goes (an alias's members, a
 * catch-all, and which remote ones get ordinary email): what a sender needs
 * to encrypt to every reader, or to know who cannot get it encrypted.
 */
export async function recipients(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const addresses = strList(p, "addresses", MAX_RECIPIENTS);
  if (addresses.length === 0) {
    throw new ModuleError(
      "invalid_parameter",
      'parameter "addresses" needs at least one address',
      { parameter: "addresses" },
    );
  }
  const resolutions = await ctx.accounts.resolve(addresses);
  // Which remote addresses ordinary email reaches (they read it unencrypted).
  const remote = [...new Set(resolutions.flatMap((r) => r.remote))];
  const routes = remote.length ? await ctx.federation.routes(remote) : [];
  const email = new Set(remote.filter((_, i) => routes[i] === "email"));
  return {
    recipients: resolutions.map((r) => ({
      address: r.input,
      kind: r.kind,
      mailboxes: r.mailboxes.map((m) => m.address),
      remote: r.remote,
      email: r.remote.filter((a) => email.has(a)),
      via: r.via ?? null,
    })),
  };
}
