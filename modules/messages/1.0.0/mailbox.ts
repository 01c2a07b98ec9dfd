/**
 * A user's mailbox in module storage.
 *
 * Keys (inside the module's namespace):
 * - `["state", owner]` -> {@link MailboxState}: change sequence, bytes used,
 *   per-folder counts, the user's own folders
 * - `["msg", owner, copyId]` -> {@link StoredRecord}: the
 *   {@link MessageRecord}, without what its key or its other fields give
 * - `["idx", owner, folder, dateMs, copyId]` -> {@link IndexEntry}: the
 *   copy's summary, stored as the copy is (newest first by reverse listing)
 * - `["thr", owner, threadKey(thread), dateMs, copyId]` -> true, for copies of
 *   messages that answer another (the message that starts a thread is found
 *   by its id)
 * - `["chg", owner, seq]` -> {@link Change} (the last {@link KEEP_CHANGES});
 *   a new copy's is `[copyId, folder]` ({@link StoredChange}: its seq is the
 *   key's, its summary the copy's)
 * - `["content", messageId]` -> {@link Content} shared by every copy of a message
 * - `["body", messageId, gen]` -> a body larger than {@link INLINE_BODY},
 *   written before the content record that names it
 * - `["owners", messageId]` -> mailboxes holding a copy (one entry per copy);
 *   the content is deleted with the last copy
 * - `["emid", owner, hash(Message-ID)]` -> the copy id of the first message
 *   with that Message-ID in the mailbox (email: threads, skipping what an
 *   import already brought)
 * - `["fts", …]`, `["ftsd", …]`, `["ftsi", …]`, `["ftsp", …]`: the search
 *   index (search_index.ts); a copy's terms and seq go in with the copy
 *
 * `messageId` is the message's local id (see ids.ts). Every change of a
 * mailbox is one atomic operation that also bumps the state's sequence and
 * writes a change record, so a client holding a sequence number can always
 * catch up (`changes`). A message is only ever added: its content is written
 * once, checked absent, and never replaced (docs/PROTOCOL.md section 13.1).
 *
 * @module
 */

import {
  GroupCommit,
  ModuleError,
  type ModuleStorage,
  type StorageEntry,
  type StorageKey,
  type Verdict,
} from "../../../workers/sdk/mod.ts";
import { localMessageId, parseGlobalId, sha256Hex } from "./ids.ts";
import { SYSTEM_FOLDERS } from "./params.ts";
import {
  ftsKey,
  type Indexed,
  indexedOf,
  indexerOf,
  indexSoon,
  termsOf,
} from "./search_index.ts";

/** Changes kept per user for catch-up. */
export const KEEP_CHANGES = 10_000;
/** Largest body stored in the same atomic operation as its copies. */
export const INLINE_BODY = 48 * 1024;
/** Default mailbox quota in bytes. */
export const DEFAULT_QUOTA = 1024 ** 3;

/** An attachment of a message. */
export interface AttachmentRef {
  /** Attachment (blob) id. */
  id: string;
  /** File name. */
  name: string;
  /** MIME type. */
  type: string;
  /** Bytes. */
  size: number;
  /** SHA-256, hex. */
  sha256: string;
  /** Where the bytes are when not under `id` (received from another server: transfer.ts). */
  blob?: string;
  /** Content-ID (without brackets) of an inline image: what `cid:` URLs in the HTML name. */
  content_id?: string;
  /** Shown within the body (an inline image) rather than as a file. */
  inline?: boolean;
}

/** What authentication of a message received by email found (docs/PROTOCOL.md 13.5). */
export interface EmailAuthRecord {
  /** The sending server's IP address. */
  client_ip: string;
  /** The name it gave (HELO/EHLO). */
  helo: string;
  /** Whether it came over TLS. */
  tls: boolean;
  /** SPF: result and the domain checked. */
  spf: { result: string; domain: string };
  /** Each DKIM signature: result, signing domain, selector. */
  dkim: { result: string; domain: string; selector: string }[];
  /** DMARC of the From domain: result, domain, published policy. */
  dmarc: { result: string; domain: string; policy: string };
  /** ARC chain. */
  arc: { result: string };
  /** The same as an Authentication-Results header value. */
  summary: string;
}

/** What a message that came (or was imported) as email keeps of it. */
export interface EmailInfo {
  /** Its Message-ID, without brackets. */
  message_id: string;
  /** The From header's display name. */
  from_name: string;
  /** The message as received or imported, byte for byte (`attachment_get`). */
  source: AttachmentRef;
  /** The HTML body, if any (`attachment_get`; to be shown sanitized). */
  html?: AttachmentRef;
  /** The envelope sender (MAIL FROM); empty for a bounce; absent when imported. */
  mail_from?: string;
  /** What the gateway checked; absent when imported. */
  auth?: EmailAuthRecord;
  /** The Message-IDs it references (In-Reply-To and References), oldest first. */
  references: string[];
  /** IMAP flags an import kept that AMTP has no field for (`\\Answered`, `\\Draft`, keywords). */
  flags?: string[];
  /** A delivery status notification: the message it reports on and each recipient's fate. */
  report?: {
    /** The copy id of the reported message in this mailbox, when found. */
    message: string | null;
    /** Per recipient. */
    recipients: {
      address: string;
      action: string;
      status: string;
      diagnostic: string;
    }[];
  };
}

/**
 * The body, stored once for every copy of a message: inline, or (larger than
 * {@link INLINE_BODY}) under `["body", messageId, large]`.
 */
export interface Content {
  /** Text, or opaque bytes for encrypted messages. */
  body?: string | Uint8Array;
  /** Generation of a large body stored apart. */
  large?: string;
}

/** One copy of a message in one mailbox. */
export interface MessageRecord {
  /** Id of this copy in this mailbox. */
  id: string;
  /** Local id of the message, the same in every mailbox of this server. */
  message_id: string;
  /** `<id>@<origin domain>`: the message's id on every server. */
  global_id: string;
  /** Mailbox owner. */
  owner: string;
  /** Folder. */
  folder: string;
  /** Sender. */
  from: string;
  /** Recipients. */
  to: string[];
  /** Copy recipients. */
  cc: string[];
  /** Blind copies: only in the sender's copy. */
  bcc: string[];
  /** Subject. */
  subject: string;
  /** `text`, `markdown` or `html`, stored as given, never rendered. */
  format: string;
  /** Whether the body is an opaque encrypted payload. */
  encrypted: boolean;
  /** Attachments. */
  attachments: AttachmentRef[];
  /** Local id of the message this one answers. */
  in_reply_to: string | null;
  /** The thread: the global id of its first message. */
  thread: string;
  /** Read. */
  seen: boolean;
  /** Flagged. */
  flagged: boolean;
  /** When it was sent. */
  date: Date;
  /** Bytes counted against the quota. */
  size: number;
  /** First characters of a plain body. */
  preview: string;
  /** Set for a message that came (or was imported) as email. */
  email?: EmailInfo;
  /** Who forwarded it here by their rules, in order (docs/PROTOCOL.md 13.4). */
  forwarded?: string[];
  /** `auto-replied` (a vacation reply) or another Auto-Submitted value. */
  auto_submitted?: string;
}

/** What lists show of a message. */
export type Summary =
  & Pick<
    MessageRecord,
    | "id"
    | "message_id"
    | "global_id"
    | "folder"
    | "from"
    | "to"
    | "subject"
    | "date"
    | "seen"
    | "flagged"
    | "size"
    | "preview"
    | "thread"
    | "encrypted"
  >
  & {
    attachments: number;
    /** For a message that came as email: the sender's name and the DMARC result. */
    email?: { from_name: string; dmarc: string };
  };

/** Counts of a folder. */
export interface FolderCount {
  /** Messages. */
  total: number;
  /** Messages not seen. */
  unseen: number;
}

/** Per-user state. */
export interface MailboxState {
  /** Last change sequence. */
  seq: number;
  /** Bytes used. */
  used: number;
  /** Counts by folder. */
  counts: Record<string, FolderCount>;
  /** The user's own folders. */
  folders: string[];
  /**
   * The first seq stored with its search terms and without a mark (absent
   * in a mailbox that has none yet): the search indexer's starting point
   * when it has no progress record (search_index.ts).
   */
  ix?: number;
}

/** One change, for catch-up. */
export interface Change {
  /** Sequence number. */
  seq: number;
  /** `new`, `flags`, `move` or `delete`. */
  type: "new" | "flags" | "move" | "delete";
  /** Copy id. */
  id: string;
  /** Folder after the change. */
  folder?: string;
  /** Flags after the change. */
  seen?: boolean;
  /** Flags after the change. */
  flagged?: boolean;
  /** Summary of a new message. */
  summary?: Summary;
}

/**
 * A copy as stored under `["msg", owner, id]`: the fields of a
 * {@link MessageRecord} under short names ({@link STORED_NAMES}), without
 * those the key gives (`id`, `owner`), those derived from others when they
 * are (`message_id`, `global_id`, `thread`; `from` the owner, `to` the owner
 * alone) and those at their defaults (empty lists, false, null, `text`). A record with an `id` field is one
 * stored whole (before 2026-11-28) and is read as it is.
 */
export type StoredRecord = Record<string, unknown>;

/**
 * The field of a stored copy holding the seq it was added with (its search
 * index record's key, search_index.ts `ftsKey.indexed`); absent in copies
 * stored before 2026-11-28, whose seq is under `ftsKey.seqOf`.
 */
const SEQ = "q";

/** Short names of the stored fields. */
const STORED_NAMES: Record<keyof MessageRecord, string> = {
  id: "id",
  owner: "o",
  message_id: "m",
  global_id: "g",
  folder: "f",
  from: "fr",
  to: "t",
  cc: "c",
  bcc: "b",
  subject: "s",
  format: "fm",
  encrypted: "e",
  attachments: "a",
  in_reply_to: "r",
  thread: "th",
  seen: "sn",
  flagged: "fl",
  date: "d",
  size: "z",
  preview: "p",
  email: "em",
  forwarded: "fw",
  auto_submitted: "as",
};

/** Fields left out of a stored copy at these values. */
const STORED_DEFAULTS: Partial<Record<keyof MessageRecord, unknown>> = {
  cc: [],
  bcc: [],
  attachments: [],
  in_reply_to: null,
  encrypted: false,
  seen: false,
  flagged: false,
  format: "text",
};

/** A copy's message id as derived from its copy id (the sender's: `<id>-sent`). */
function messageIdOf(copyId: string): string {
  return copyId.endsWith("-sent") ? copyId.slice(0, -5) : copyId;
}

/** A global id as derived from the message id and the owner's domain. */
function globalIdOf(messageId: string, owner: string): string {
  return `${messageId}@${owner.slice(owner.lastIndexOf("@") + 1)}`;
}

/** The stored form of a copy ({@link StoredRecord}). */
export function packRecord(m: MessageRecord): StoredRecord {
  const out: StoredRecord = {};
  const derived: Partial<Record<keyof MessageRecord, unknown>> = {
    id: m.id,
    owner: m.owner,
    message_id: messageIdOf(m.id),
    global_id: globalIdOf(m.message_id, m.owner),
    thread: m.global_id,
    from: m.owner,
  };
  for (const [name, value] of Object.entries(m)) {
    const field = name as keyof MessageRecord;
    const short = STORED_NAMES[field];
    if (short === undefined || value === undefined) continue;
    if (field in derived && derived[field] === value) continue;
    if (field === "to" && m.to.length === 1 && m.to[0] === m.owner) continue;
    const empty = STORED_DEFAULTS[field];
    if (
      field in STORED_DEFAULTS &&
      (empty === value ||
        (Array.isArray(empty) && Array.isArray(value) && value.length === 0))
    ) continue;
    out[short] = value;
  }
  return out;
}

/** What a new copy stores: its stored form and the seq it is added with. */
export function storedCopy(m: MessageRecord, seq: number): StoredRecord {
  return { ...packRecord(m), [SEQ]: seq };
}

/** A copy as read from `["msg", owner, id]`, in either stored form. */
export function unpackRecord(
  owner: string,
  id: string,
  stored: StoredRecord,
): MessageRecord {
  if (typeof stored.id === "string") return stored as unknown as MessageRecord;
  const out: Record<string, unknown> = {};
  for (const [field, short] of Object.entries(STORED_NAMES)) {
    const value = stored[short];
    if (value !== undefined) out[field] = value;
  }
  for (const [field, empty] of Object.entries(STORED_DEFAULTS)) {
    out[field] ??= Array.isArray(empty) ? [] : empty;
  }
  out.id = id;
  out.owner ??= owner;
  out.message_id ??= messageIdOf(id);
  out.global_id ??= globalIdOf(out.message_id as string, owner);
  out.thread ??= out.global_id;
  out.from ??= owner;
  out.to ??= [owner];
  return out as unknown as MessageRecord;
}

/** A copy read from storage (its key names its owner and id). */
export function recordOf(entry: StorageEntry<StoredRecord>): MessageRecord {
  return unpackRecord(
    String(entry.key[1]),
    String(entry.key[2]),
    entry.value,
  );
}

/**
 * The value of a copy's entry in its folder's index (`["idx", owner, folder,
 * dateMs, copyId]`): its {@link Summary} in the stored form of a copy
 * ({@link packRecord}) without the folder and date (the key's), with `a` the
 * number of attachments and `em` what a summary shows of an email. The list
 * reads only these: one range of the index, not the copies (a page of 50
 * copies read by key took 3x as long). Entries written before 2026-11-28
 * hold the {@link Summary} itself (it has an `id`), and are read as they are.
 */
export type IndexEntry = Summary | StoredRecord;

/** Fields of a stored copy that a summary does not show. */
const NOT_SUMMARY = ["f", "d", "c", "b", "fm", "a", "r", "em", "fw", "as", SEQ];

/** The index entry of a copy. */
export function indexEntryOf(m: MessageRecord): IndexEntry {
  const out = packRecord(m);
  for (const name of NOT_SUMMARY) delete out[name];
  if (m.attachments.length > 0) out.a = m.attachments.length;
  const email = summaryOf(m).email;
  if (email) out.em = email;
  return out;
}

/** The summary an index entry holds (`key`: its key). */
function summaryOfEntry(key: StorageKey, entry: IndexEntry): Summary {
  if (typeof entry.id === "string") return entry as Summary;
  const stored = entry as StoredRecord;
  const field = <T>(name: keyof MessageRecord, otherwise: T): T =>
    (stored[STORED_NAMES[name]] as T | undefined) ?? otherwise;
  const owner = String(key[1]);
  const id = String(key[4]);
  const messageId = field("message_id", messageIdOf(id));
  const globalId = field("global_id", globalIdOf(messageId, owner));
  const email = stored.em as Summary["email"] | undefined;
  return {
    id,
    message_id: messageId,
    global_id: globalId,
    folder: String(key[2]),
    from: field("from", owner),
    to: field("to", [owner]),
    subject: field("subject", ""),
    date: new Date(Number(key[3])),
    seen: field("seen", false),
    flagged: field("flagged", false),
    size: field("size", 0),
    preview: field("preview", ""),
    thread: field("thread", globalId),
    encrypted: field("encrypted", false),
    attachments: field("attachments", 0),
    ...(email ? { email } : {}),
  };
}

/**
 * A change record as stored: a new copy's is `[copyId, folder]` (written
 * before 2026-11-28: a {@link Change} without its summary), the others a
 * {@link Change}.
 */
export type StoredChange = Change | [string, string];

/** Build the summary of a record. */
export function summaryOf(m: MessageRecord): Summary {
  return {
    id: m.id,
    message_id: m.message_id,
    global_id: m.global_id,
    folder: m.folder,
    from: m.from,
    to: m.to,
    subject: m.subject,
    date: m.date,
    seen: m.seen,
    flagged: m.flagged,
    size: m.size,
    preview: m.preview,
    thread: m.thread,
    encrypted: m.encrypted,
    attachments: m.attachments.length,
    ...(m.email
      ? {
        email: {
          from_name: m.email.from_name,
          dmarc: m.email.auth?.dmarc.result ?? "none",
        },
      }
      : {}),
  };
}

function emptyState(): MailboxState {
  return { seq: 0, used: 0, counts: {}, folders: [] };
}

/** The key part of a thread (a global id may be longer than a key part). */
export function threadKey(thread: string): string {
  return sha256Hex(`AMTP thread\n${thread}`).slice(0, 32);
}

/** Keys of a mailbox. */
export const key = {
  state: (owner: string) => ["state", owner],
  msg: (owner: string, id: string) => ["msg", owner, id],
  idx: (
    owner: string,
    folder: string,
    date: Date,
    id: string,
  ) => ["idx", owner, folder, date.getTime(), id],
  thr: (
    owner: string,
    thread: string,
    date: Date,
    id: string,
  ) => ["thr", owner, threadKey(thread), date.getTime(), id],
  chg: (owner: string, seq: number) => ["chg", owner, seq],
  content: (messageId: string) => ["content", messageId],
  body: (messageId: string, gen: string) => ["body", messageId, gen],
  owners: (messageId: string) => ["owners", messageId],
  emid: (owner: string, messageId: string) => [
    "emid",
    owner,
    sha256Hex(`AMTP email id\n${messageId}`).slice(0, 32),
  ],
};

function count(state: MailboxState, folder: string): FolderCount {
  return state.counts[folder] ??= { total: 0, unseen: 0 };
}

/** One operation of an atomic storage write. */
export type Op =
  | { op: "set"; key: (string | number)[]; value: unknown; fresh?: boolean }
  | { op: "delete"; key: (string | number)[] }
  | { op: "check"; key: (string | number)[]; versionstamp: string | null };

/** The tail of each mailbox's queue of changes in this instance. */
const locks = new Map<string, Promise<void>>();

/**
 * Run `work` once every earlier holder of any of `owners`' locks is done.
 * All locks of one call are taken at once, so calls wait only on earlier
 * calls and never on each other in a circle.
 */
async function withLocks<T>(
  owners: string[],
  work: () => Promise<T>,
): Promise<T> {
  const unique = [...new Set(owners)];
  const earlier = unique.map((o) => locks.get(o)).filter((p) => p);
  let release!: () => void;
  const mine = new Promise<void>((resolve) => release = resolve);
  for (const owner of unique) locks.set(owner, mine);
  try {
    await Promise.all(earlier);
    return await work();
  } finally {
    release();
    for (const owner of unique) {
      if (locks.get(owner) === mine) locks.delete(owner);
    }
  }
}

/** Copies of one message stored per atomic operation. */
export const COPIES_PER_PART = 8;
/**
 * Bounds of one batch: copies (each up to 7 operations with its search
 * index records, its mailbox's state 2 more, its message's content and
 * owners 4: within 900 operations), and checks of the atomic operation (KV
 * allows 100).
 */
const BATCH_COPIES = 80;
const BATCH_CHECKS = 95;
/** Bytes a copy's records take in a batch (an upper estimate). */
const COPY_BYTES = 4_000;
/** Bytes of one batch's values (KV allows 800 KiB per atomic operation). */
const BATCH_BYTES = 400_000;

/** Bytes the search index records of `copies` take (their terms). */
function termBytes(copies: NewCopy[]): number {
  let bytes = 0;
  for (const c of copies) {
    for (const term of c.terms?.keys() ?? []) bytes += term.length + 6;
  }
  return bytes;
}

/** Bytes an operation's value adds to an atomic operation (an estimate: its key and value as JSON). */
export function valueBytes(op: Op): number {
  if (op.op !== "set") return 100;
  const v = op.value;
  return 100 + (v instanceof Uint8Array ? v.byteLength : bodyBytes(
    JSON.stringify(v) ?? "",
  ));
}

/** Bytes of a body (UTF-8 for text). */
export function bodyBytes(body: string | Uint8Array): number {
  return typeof body === "string"
    ? new TextEncoder().encode(body).byteLength
    : body.byteLength;
}

/** The body of a message, or null when its content is gone. */
export async function readBody(
  storage: ModuleStorage,
  messageId: string,
): Promise<string | Uint8Array | null> {
  const content = (await storage.get<Content>(key.content(messageId)))?.value;
  if (!content) return null;
  if (content.large === undefined) return content.body ?? null;
  return (await storage.get<string | Uint8Array>(
    key.body(messageId, content.large),
  ))?.value ?? null;
}

/**
 * Drop removed copies from their messages' owners lists; a message no
 * mailbox holds any more loses its content in the same atomic operation (so
 * a delivery adding a copy at that moment sees the content gone and writes
 * it again, never keeps a copy without one).
 */
export async function releaseCopies(
  storage: ModuleStorage,
  removed: MessageRecord[],
): Promise<void> {
  for (const record of removed) {
    const ownersKey = key.owners(record.message_id);
    const contentKey = key.content(record.message_id);
    for (let attempt = 0; attempt < 50; attempt++) {
      const [owners, content] = await storage.getMany<string[] | Content>([
        ownersKey,
        contentKey,
      ]) as [StorageEntry<string[]> | null, StorageEntry<Content> | null];
      if (!owners) break;
      const rest = [...owners.value];
      const at = rest.indexOf(record.owner);
      if (at < 0) break;
      rest.splice(at, 1);
      const ops: Op[] = [{
        op: "check",
        key: ownersKey,
        versionstamp: owners.versionstamp,
      }];
      if (rest.length > 0) {
        ops.push({ op: "set", key: ownersKey, value: rest });
      } else {
        ops.push(
          { op: "delete", key: ownersKey },
          {
            op: "check",
            key: contentKey,
            versionstamp: content?.versionstamp ?? null,
          },
          { op: "delete", key: contentKey },
        );
      }
      if (!(await storage.atomic(ops))) continue;
      if (rest.length === 0 && content?.value.large !== undefined) {
        await storage.delete(key.body(record.message_id, content.value.large));
      }
      break;
    }
  }
}

/** Mailbox states kept by a batcher. */
const STATES_KEPT = 20_000;

/** A mailbox state and the versionstamp it was written with. */
interface CachedState {
  state: MailboxState;
  versionstamp: string;
}

/** What became of one copy: its change, `exists` (delivered before) or `quota`. */
export type CopyOutcome = Change | "exists" | "quota";

/** One copy of a {@link NewMessage}. */
export interface NewCopy {
  /** The copy. */
  record: MessageRecord;
  /** Quota of its mailbox in bytes. */
  quota: number;
  /**
   * The copy's id was never used (a message id just made at random): its
   * absence is not checked. Otherwise a copy that exists is not added again.
   */
  fresh?: boolean;
  /** Its search terms with their field bits (made by {@link addMessage} when absent). */
  terms?: Map<string, number>;
}

/** A message to store with {@link addMessage}. */
export interface NewMessage {
  /** Local id: keys the content shared by the copies, and its owners list. */
  id: string;
  /** The body, stored once for every copy. */
  body: string | Uint8Array;
  /**
   * The id was just drawn at random: its content and owners list are known
   * to be absent (still checked by the atomic operation, but not read).
   */
  fresh: boolean;
  /** Its copies, each in its own mailbox. */
  copies: NewCopy[];
}

/** Copies of one message to store in one atomic operation with others. */
interface Part {
  copies: NewCopy[];
  /** Local id of the message: two parts of one message never share a commit. */
  message: string;
  /** Checks the part's own operations hold (for the batch's bound). */
  checks: number;
  /** Bytes of its values (for the batch's bound). */
  bytes: number;
  /** The part's own operations, from its copies' outcomes (`retry`: read, do not trust what is known). */
  extra: (outcomes: CopyOutcome[], retry: boolean) => Promise<Op[]>;
  resolve: (done: PartDone) => void;
  reject: (error: unknown) => void;
}

/** The outcome of a part: its copies', and the versionstamp of the commit (null when nothing was written). */
interface PartDone {
  outcomes: CopyOutcome[];
  versionstamp: string | null;
}

/**
 * Stores parts of concurrent deliveries together: while one atomic operation
 * is being committed, the parts that arrive wait and then go in the next one
 * (each mailbox's state read once, its sequence numbers given out in order).
 * Under load one commit carries the copies of many messages. The loop is the
 * SDK's group commit; the planning of sequence numbers is this batcher's
 * hook. Its atomic operation then goes through the storage, whose own group
 * commit may carry it with the module's other writes in one KV commit (with
 * storage through the core, that one runs in the core: the mailbox plans
 * cannot move there).
 */
class CopyBatcher {
  readonly #storage: ModuleStorage;
  readonly #parts: GroupCommit<Part>;
  /**
   * States this batcher wrote, with their versionstamps: the next batch
   * plans from them without reading. A stale one (another copy of the
   * module wrote since) fails the atomic check and is read again.
   */
  readonly #states = new Map<string, CachedState>();

  constructor(storage: ModuleStorage) {
    this.#storage = storage;
    const owners = (parts: Part[]) =>
      parts.flatMap((p) => p.copies.map((c) => c.record.owner));
    this.#parts = new GroupCommit<Part>({
      choose: () => this.#choose(),
      commit: async (batch) => {
        await withLocks(owners(batch), () => this.#commit(batch));
        return [];
      },
      alone: (part) => withLocks(owners([part]), () => this.#commit([part])),
      fail: (part, error) => part.reject(error),
    });
  }

  submit(part: Omit<Part, "resolve" | "reject">): Promise<PartDone> {
    return new Promise((resolve, reject) => {
      this.#parts.submit({ ...part, resolve, reject });
    });
  }

  /**
   * Parts in order while the batch stays within its bounds of copies and
   * checks; the same message twice (a retry racing its first attempt) ends
   * the batch: its content and owners must be planned from what the first
   * wrote.
   */
  #choose(): (part: Part) => Verdict {
    const owners = new Set<string>();
    const messages = new Set<string>();
    let members = 0;
    let copies = 0;
    let checks = 0;
    let bytes = 0;
    return (part) => {
      const newOwners = new Set(
        part.copies.map((c) => c.record.owner).filter((o) => !owners.has(o)),
      );
      const c = part.copies.length;
      const k = part.copies.filter((x) => !x.fresh).length + newOwners.size +
        part.checks;
      if (
        members > 0 &&
        (copies + c > BATCH_COPIES || checks + k > BATCH_CHECKS ||
          bytes + part.bytes > BATCH_BYTES || messages.has(part.message))
      ) return "stop";
      members++;
      bytes += part.bytes;
      for (const o of newOwners) owners.add(o);
      messages.add(part.message);
      copies += c;
      checks += k;
      return "join";
    };
  }

  async #commit(batch: Part[]): Promise<void> {
    const all = batch.flatMap((p) => p.copies);
    for (let attempt = 0; attempt < 50; attempt++) {
      const plan = await planCopies(
        this.#storage,
        all,
        attempt > 0 ? "read" : this.#states,
      );
      const ops: Op[] = [...plan.ops];
      const outcomes: CopyOutcome[][] = [];
      let at = 0;
      for (const part of batch) {
        const mine = plan.outcomes.slice(at, at += part.copies.length);
        outcomes.push(mine);
        ops.push(...await part.extra(mine, attempt > 0));
      }
      const versionstamp = ops.length === 0
        ? null
        : await this.#storage.commit(ops);
      if (versionstamp !== null || ops.length === 0) {
        for (const [owner, state] of plan.written) {
          this.#remember(owner, { state, versionstamp: versionstamp! });
        }
        batch.forEach((part, i) =>
          part.resolve({ outcomes: outcomes[i], versionstamp })
        );
        if (plan.stored.length > 0) {
          const owners = new Map<string, number>();
          for (const r of plan.stored) {
            owners.set(r.owner, (owners.get(r.owner) ?? 0) + 1);
          }
          indexSoon(this.#storage, owners);
        }
        return;
      }
      // Someone else changed one of these mailboxes: read them again.
      for (const copy of all) this.forget(copy.record.owner);
      await new Promise((r) =>
        setTimeout(r, Math.random() * 5 * (attempt + 1))
      );
    }
    throw new ModuleError(
      "handler_failed",
      "the mailboxes are too busy; try again",
    );
  }

  /** Forget a mailbox's state (it was changed outside this batcher). */
  forget(owner: string): void {
    this.#states.delete(owner);
  }

  #remember(owner: string, entry: CachedState): void {
    this.#states.delete(owner);
    this.#states.set(owner, entry);
    if (this.#states.size > STATES_KEPT) {
      this.#states.delete(this.#states.keys().next().value!);
    }
  }
}

const batchers = new WeakMap<ModuleStorage, CopyBatcher>();

/** What a delivery knows of its message's content and owners list. */
interface Shared {
  /** Versionstamp of the content record, null when there is none. */
  content: string | null;
  /** The owners list. */
  owners: StorageEntry<string[]> | null;
}

/**
 * Store a message: its copies in their mailboxes (each idempotent by its
 * id and counted against its mailbox's quota, up to {@link COPIES_PER_PART}
 * copies per atomic operation, shared with concurrent deliveries), the
 * content they share and the list of who holds a copy.
 *
 * Only ever adds: the content is written only when absent (checked by the
 * atomic operation) and never replaced, so a retry or another delivery of
 * the same id cannot change what its copies read; the owners list grows by
 * the copies really added; a part that adds no copy commits nothing.
 * `last` operations (built from every copy's outcome, in the order of
 * `copies`) go with the last part, whatever it adds.
 */
export async function addMessage(
  storage: ModuleStorage,
  message: NewMessage,
  options: {
    /** Operations of the last part, from every copy's outcome (`retry`: the commit is tried again, read what they depend on). */
    last?: (outcomes: CopyOutcome[], retry: boolean) => Promise<Op[]>;
    /** Bytes the `last` operations write (for the batch's bound). */
    bytes?: number;
    /** Checks the `last` operations hold at most (for the batch's bound). */
    checks?: number;
  } = {},
): Promise<CopyOutcome[]> {
  if (message.copies.length === 0) return [];
  // The search index's backlog is bounded: past it, deliveries wait for it.
  await indexerOf(storage).room();
  for (const c of message.copies) c.terms ??= termsOf(c.record, message.body);
  let batcher = batchers.get(storage);
  if (!batcher) batchers.set(storage, batcher = new CopyBatcher(storage));
  const contentKey = key.content(message.id);
  const ownersKey = key.owners(message.id);
  const read = async (): Promise<Shared> => {
    const [content, owners] = await storage.getMany<string[]>([
      contentKey,
      ownersKey,
    ]);
    return { content: content?.versionstamp ?? null, owners };
  };
  let known: Shared | null = message.fresh
    ? { content: null, owners: null }
    : null;
  // A large body cannot go into an atomic operation: it is written apart
  // first, under a generation of its own, and the content record naming it
  // goes with the copies. Unused (the content was there), it is deleted.
  const large = bodyBytes(message.body) > INLINE_BODY;
  let staged: string | undefined;
  let stagedUsed = false;
  const stage = async () => {
    if (staged !== undefined) return staged;
    const gen = crypto.randomUUID();
    await storage.set(key.body(message.id, gen), message.body);
    return staged = gen;
  };
  if (large && (known ?? (known = await read())).content === null) {
    await stage();
  }
  const outcomes: CopyOutcome[] = [];
  try {
    for (
      let from = 0;
      from < message.copies.length;
      from += COPIES_PER_PART
    ) {
      const copies = message.copies.slice(from, from + COPIES_PER_PART);
      const isLast = from + COPIES_PER_PART >= message.copies.length;
      const earlier = [...outcomes];
      let planned: { shared: Shared; wrote: boolean; owners: string[] } | null =
        null;
      const done = await batcher.submit({
        copies,
        message: message.id,
        checks: 2 + (isLast ? options.checks ?? 0 : 0),
        bytes: (from === 0 && !large ? bodyBytes(message.body) : 0) +
          // A copy's record, summary and change: a few KiB at most (their
          // fields are bounded), more with an email's details.
          copies.length * COPY_BYTES + termBytes(copies) +
          (isLast ? options.bytes ?? 0 : 0),
        extra: async (mine, retry) => {
          planned = null;
          const ops: Op[] = [];
          const added = copies.filter((_, i) => typeof mine[i] === "object")
            .map((c) => c.record.owner);
          if (added.length > 0) {
            const shared = !retry && known ? known : await read();
            const wrote = shared.content === null;
            if (wrote) {
              const value: Content = large
                ? { large: await stage() }
                : { body: message.body };
              ops.push(
                { op: "check", key: contentKey, versionstamp: null },
                { op: "set", key: contentKey, value, fresh: true },
              );
            } else {
              // Kept as it is; checked so that it is still there.
              ops.push({
                op: "check",
                key: contentKey,
                versionstamp: shared.content,
              });
            }
            const owners = [...(shared.owners?.value ?? []), ...added];
            ops.push(
              {
                op: "check",
                key: ownersKey,
                versionstamp: shared.owners?.versionstamp ?? null,
              },
              {
                op: "set",
                key: ownersKey,
                value: owners,
                fresh: shared.owners === null,
              },
            );
            planned = { shared, wrote, owners };
          }
          if (isLast && options.last) {
            ops.push(...await options.last([...earlier, ...mine], retry));
          }
          return ops;
        },
      });
      outcomes.push(...done.outcomes);
      const wrote = planned as
        | { shared: Shared; wrote: boolean; owners: string[] }
        | null;
      if (wrote && done.versionstamp !== null) {
        if (wrote.wrote) stagedUsed = true;
        known = {
          content: wrote.wrote ? done.versionstamp : wrote.shared.content,
          owners: {
            key: ownersKey,
            value: wrote.owners,
            versionstamp: done.versionstamp,
          },
        };
      }
    }
  } finally {
    if (staged !== undefined && !stagedUsed) {
      await storage.delete(key.body(message.id, staged));
    }
  }
  return outcomes;
}

/** The operations adding `part`, from the mailboxes' current states. */
async function planCopies(
  storage: ModuleStorage,
  part: NewCopy[],
  known: Map<string, CachedState> | "read",
): Promise<
  {
    ops: Op[];
    outcomes: (Change | "exists" | "quota")[];
    stored: MessageRecord[];
    written: Map<string, MailboxState>;
  }
> {
  const retry = known === "read";
  const states = new Map<
    string,
    { state: MailboxState; versionstamp: string | null }
  >();
  const owners = [...new Set(part.map((c) => c.record.owner))];
  const unknown: string[] = [];
  for (const owner of owners) {
    const cached = known === "read" ? undefined : known.get(owner);
    if (cached) {
      states.set(owner, {
        state: structuredClone(cached.state),
        versionstamp: cached.versionstamp,
      });
    } else unknown.push(owner);
  }
  const entries = await storage.getMany<MailboxState>(
    unknown.map((owner) => key.state(owner)),
  );
  unknown.forEach((owner, i) => {
    const entry = entries[i];
    states.set(
      owner,
      entry
        ? { state: entry.value, versionstamp: entry.versionstamp }
        : { state: emptyState(), versionstamp: null },
    );
  });
  // Optimistic: each copy's absence is checked by the atomic operation; only
  // after a failed attempt are they read (a retried delivery).
  const exists = retry
    ? (await storage.getMany(
      part.map((c) => key.msg(c.record.owner, c.record.id)),
    )).map((entry) => entry !== null)
    : part.map(() => false);
  const ops: Op[] = [];
  const outcomes: (Change | "exists" | "quota")[] = [];
  const stored: MessageRecord[] = [];
  part.forEach(({ record, quota, fresh = false, terms }, i) => {
    const { state } = states.get(record.owner)!;
    if (exists[i]) return outcomes.push("exists");
    if (state.used + record.size > quota) return outcomes.push("quota");
    state.used += record.size;
    const c = count(state, record.folder);
    c.total++;
    if (!record.seen) c.unseen++;
    state.ix ??= state.seq + 1;
    const change: Change = {
      seq: ++state.seq,
      type: "new",
      id: record.id,
      folder: record.folder,
      summary: summaryOf(record),
    };
    const owner = record.owner;
    ops.push(
      ...(fresh ? [] : [{
        op: "check" as const,
        key: key.msg(owner, record.id),
        versionstamp: null,
      }]),
      {
        op: "set",
        key: key.msg(owner, record.id),
        value: storedCopy(record, change.seq),
        fresh,
      },
      // New keys (the copy's id and the sequence number are new): not read.
      {
        op: "set",
        key: key.idx(owner, record.folder, record.date, record.id),
        value: indexEntryOf(record),
        fresh: true,
      },
      // A message that starts its thread has no thread entry: `thread`
      // finds it by its id (one record less per delivery). An email's
      // local id is not derived from its Message-ID: it always has one.
      ...(record.thread === record.global_id && !record.email ? [] : [{
        op: "set" as const,
        key: key.thr(owner, record.thread, record.date, record.id),
        value: true,
        fresh: true,
      }]),
      // The change record leaves the summary out (the list reads it from
      // the copy, and so does `changes`).
      {
        op: "set",
        key: key.chg(owner, change.seq),
        value: [record.id, record.folder],
        fresh: true,
      },
      // For search: the copy's terms under its seq (which the copy
      // keeps). Its postings go into the term blocks after this commit, off
      // the delivery's path, many commits' copies at once (search_index.ts:
      // the indexer goes on from its progress record).
      {
        op: "set",
        key: ftsKey.indexed(owner, change.seq),
        value: indexedOf(record.id, record.folder, terms ?? new Map()),
        fresh: true,
      },
    );
    if (change.seq > KEEP_CHANGES) {
      ops.push({
        op: "delete",
        key: key.chg(owner, change.seq - KEEP_CHANGES),
      });
    }
    outcomes.push(change);
    stored.push(record);
  });
  const written = new Map<string, MailboxState>();
  for (const [owner, { state, versionstamp }] of states) {
    if (!stored.some((r) => r.owner === owner)) continue;
    ops.push(
      { op: "check", key: key.state(owner), versionstamp },
      { op: "set", key: key.state(owner), value: state },
    );
    written.set(owner, state);
  }
  return { ops, outcomes, stored, written };
}

/** Operations on one user's mailbox. */
export class Mailbox {
  readonly owner: string;
  readonly #storage: ModuleStorage;

  /** Open the mailbox of `owner`. */
  constructor(storage: ModuleStorage, owner: string) {
    this.#storage = storage;
    this.owner = owner;
  }

  /** The state and its versionstamp. */
  async state(): Promise<{ state: MailboxState; versionstamp: string | null }> {
    const entry = await this.#storage.get<MailboxState>(key.state(this.owner));
    return entry
      ? { state: entry.value, versionstamp: entry.versionstamp }
      : { state: emptyState(), versionstamp: null };
  }

  /** One copy, or null. */
  async message(id: string): Promise<StorageEntry<MessageRecord> | null> {
    const entry = await this.#storage.get<StoredRecord>(
      key.msg(this.owner, id),
    );
    return entry && { ...entry, value: recordOf(entry) };
  }

  /** The copy of a message by its id or its copy's, received or sent; or null. */
  async copyOf(id: string): Promise<MessageRecord | null> {
    const [received, sent] = await this.#storage.getMany<StoredRecord>([
      key.msg(this.owner, id),
      key.msg(this.owner, `${id}-sent`),
    ]);
    const entry = received ?? sent;
    return entry && recordOf(entry);
  }

  /**
   * Run `build` against the current state and commit its operations together
   * with the new state and change records, retrying on concurrent changes.
   * `build` returns the changes (without seq) and operations, or null to do nothing.
   */
  commit(
    build: (
      state: MailboxState,
    ) => Promise<{ changes: Omit<Change, "seq">[]; ops: Op[] } | null>,
  ): Promise<{ changes: Change[]; state: MailboxState } | null> {
    // One change of a mailbox at a time in this instance: concurrent sends to
    // one user would otherwise conflict on its state record and retry.
    return withLocks([this.owner], () => this.#commit(build));
  }

  async #commit(
    build: (
      state: MailboxState,
    ) => Promise<{ changes: Omit<Change, "seq">[]; ops: Op[] } | null>,
  ): Promise<{ changes: Change[]; state: MailboxState } | null> {
    for (let attempt = 0; attempt < 50; attempt++) {
      const { state, versionstamp } = await this.state();
      const next = structuredClone(state);
      const plan = await build(next);
      if (!plan) return null;
      const changes: Change[] = plan.changes.map((c) => ({
        ...c,
        seq: ++next.seq,
      }));
      const ops: Op[] = [{
        op: "check",
        key: key.state(this.owner),
        versionstamp,
      }, ...plan.ops];
      for (const change of changes) {
        ops.push({
          op: "set",
          key: key.chg(this.owner, change.seq),
          value: change,
        });
        if (change.seq > KEEP_CHANGES) {
          ops.push({
            op: "delete",
            key: key.chg(this.owner, change.seq - KEEP_CHANGES),
          });
        }
      }
      ops.push({ op: "set", key: key.state(this.owner), value: next });
      if (await this.#storage.atomic(ops)) {
        // The batcher's copy of this state is now old.
        batchers.get(this.#storage)?.forget(this.owner);
        return { changes, state: next };
      }
      await new Promise((r) =>
        setTimeout(r, Math.random() * 5 * (attempt + 1))
      );
    }
    throw new ModuleError(
      "handler_failed",
      "the mailbox is too busy; try again",
    );
  }

  /** Change flags, folder or existence of copies; returns the changes made. */
  async update(
    ids: string[],
    change: {
      seen?: boolean;
      flagged?: boolean;
      folder?: string;
      remove?: boolean;
    },
  ): Promise<
    { changes: Change[]; missing: string[]; removed: MessageRecord[] }
  > {
    const missing: string[] = [];
    const removed: MessageRecord[] = [];
    const result = await this.commit(async (state) => {
      missing.length = 0;
      removed.length = 0;
      const ops: Op[] = [];
      const changes: Omit<Change, "seq">[] = [];
      for (const id of ids) {
        const entry = await this.#storage.get<StoredRecord>(
          key.msg(this.owner, id),
        );
        if (!entry) {
          missing.push(id);
          continue;
        }
        const old = recordOf(entry);
        const seq = entry.value[SEQ];
        // The search index keeps each copy's folder: follow it, or drop it.
        if (change.remove || (change.folder ?? old.folder) !== old.folder) {
          ops.push(
            ...await this.#unindex(
              id,
              typeof seq === "number" ? seq : undefined,
              change.remove ? undefined : change.folder,
            ),
          );
        }
        const before = count(state, old.folder);
        before.total--;
        if (!old.seen) before.unseen--;
        ops.push({
          op: "delete",
          key: key.idx(this.owner, old.folder, old.date, id),
        });
        if (change.remove) {
          state.used -= old.size;
          ops.push({ op: "delete", key: key.msg(this.owner, id) });
          ops.push({
            op: "delete",
            key: key.thr(this.owner, old.thread, old.date, id),
          });
          changes.push({ type: "delete", id, folder: old.folder });
          removed.push(old);
          continue;
        }
        const next: MessageRecord = {
          ...old,
          seen: change.seen ?? old.seen,
          flagged: change.flagged ?? old.flagged,
          folder: change.folder ?? old.folder,
        };
        const after = count(state, next.folder);
        after.total++;
        if (!next.seen) after.unseen++;
        ops.push({
          op: "set",
          key: key.msg(this.owner, id),
          value: {
            ...packRecord(next),
            ...(typeof seq === "number" ? { [SEQ]: seq } : {}),
          },
        });
        ops.push({
          op: "set",
          key: key.idx(this.owner, next.folder, next.date, id),
          value: indexEntryOf(next),
        });
        changes.push(
          next.folder !== old.folder
            ? {
              type: "move",
              id,
              folder: next.folder,
              seen: next.seen,
              flagged: next.flagged,
            }
            : {
              type: "flags",
              id,
              folder: next.folder,
              seen: next.seen,
              flagged: next.flagged,
            },
        );
      }
      return changes.length > 0 ? { changes, ops } : null;
    });
    if (result && change.remove) {
      indexSoon(this.#storage, new Map([[this.owner, removed.length]]));
    }
    return { changes: result?.changes ?? [], missing, removed };
  }

  /**
   * The search index's part of moving copy `id` (stored with its `seq`, or
   * before 2026-11-28 without) to `folder` (undefined: deleting it): its
   * index record follows or goes (its postings dropped by the indexer);
   * checked, so an indexing in between is seen.
   */
  async #unindex(
    id: string,
    seq: number | undefined,
    folder: string | undefined,
  ): Promise<Op[]> {
    if (seq !== undefined) {
      const key = ftsKey.indexed(this.owner, seq);
      const indexed = await this.#storage.get<Indexed>(key);
      const ops: Op[] = [
        { op: "check", key, versionstamp: indexed?.versionstamp ?? null },
      ];
      if (!indexed) return ops;
      ops.push(
        ...(folder !== undefined
          ? [{
            op: "set" as const,
            key,
            value: { ...indexed.value, f: folder },
          }]
          : [
            { op: "delete" as const, key },
            {
              op: "set" as const,
              key: ftsKey.drop(this.owner, seq),
              value: indexed.value.w.map((w) => w.slice(1)),
            },
          ]),
      );
      return ops;
    }
    // Stored without its seq: the search index's record of it says it.
    const seqOf = await this.#storage.get<number>(
      ftsKey.seqOf(this.owner, id),
    );
    if (!seqOf) {
      return [{
        op: "check",
        key: ftsKey.seqOf(this.owner, id),
        versionstamp: null,
      }];
    }
    const key = ftsKey.indexed(this.owner, seqOf.value);
    const indexed = await this.#storage.get<Indexed>(key);
    const ops: Op[] = [
      { op: "check", key: seqOf.key, versionstamp: seqOf.versionstamp },
      { op: "check", key, versionstamp: indexed?.versionstamp ?? null },
    ];
    if (!indexed) return ops;
    if (folder !== undefined) {
      ops.push({ op: "set", key, value: { ...indexed.value, f: folder } });
      return ops;
    }
    ops.push(
      { op: "delete", key },
      { op: "delete", key: seqOf.key },
      {
        op: "set",
        key: ftsKey.drop(this.owner, seqOf.value),
        value: indexed.value.w.map((w) => w.slice(1)),
      },
    );
    return ops;
  }

  /** Add one of the user's own folders. */
  async createFolder(name: string): Promise<void> {
    await this.commit((state) => {
      if (
        (SYSTEM_FOLDERS as readonly string[]).includes(name) ||
        state.folders.includes(name)
      ) {
        throw new ModuleError("invalid_parameter", `folder "${name}" exists`, {
          parameter: "folder",
        });
      }
      if (state.folders.length >= 200) {
        throw new ModuleError("limit_exceeded", "at most 200 folders");
      }
      state.folders.push(name);
      return Promise.resolve({ changes: [], ops: [] });
    });
  }

  /** Remove one of the user's own folders; it must be empty. */
  async deleteFolder(name: string): Promise<void> {
    await this.commit((state) => {
      if (!state.folders.includes(name)) {
        throw new ModuleError("not_found", `no folder "${name}" of your own`);
      }
      if ((state.counts[name]?.total ?? 0) > 0) {
        throw new ModuleError(
          "invalid_parameter",
          `folder "${name}" is not empty`,
          { parameter: "folder" },
        );
      }
      state.folders = state.folders.filter((f) => f !== name);
      delete state.counts[name];
      return Promise.resolve({ changes: [], ops: [] });
    });
  }

  /** Does the folder exist for this user? */
  async hasFolder(name: string): Promise<boolean> {
    if ((SYSTEM_FOLDERS as readonly string[]).includes(name)) return true;
    return (await this.state()).state.folders.includes(name);
  }

  /** A page of a folder, newest first. */
  async list(
    folder: string,
    options: { limit: number; cursor?: string; unseen?: boolean },
  ): Promise<{ messages: Summary[]; cursor?: string }> {
    const messages: Summary[] = [];
    let cursor = options.cursor;
    // With the unseen filter a storage page may hold fewer matches: read on.
    for (let pages = 0; pages < 20; pages++) {
      const page = await this.#storage.list<IndexEntry>([
        "idx",
        this.owner,
        folder,
      ], {
        limit: options.limit - messages.length,
        cursor,
        reverse: true,
      });
      for (const entry of page.items) {
        const summary = summaryOfEntry(entry.key, entry.value);
        if (!options.unseen || !summary.seen) messages.push(summary);
      }
      cursor = page.cursor;
      if (!cursor || messages.length >= options.limit) break;
    }
    return cursor ? { messages, cursor } : { messages };
  }

  /**
   * Copies in a thread, oldest first: the thread's entries, and the copies of
   * the message that started it (stored without an entry), under each local
   * id its global id can have here; only copies that name the thread count.
   */
  async thread(thread: string): Promise<Summary[]> {
    const page = await this.#storage.list<boolean>(
      ["thr", this.owner, threadKey(thread)],
      { limit: 500 },
    );
    const ids = new Set(page.items.map((entry) => String(entry.key[4])));
    const first = parseGlobalId(thread);
    if (first) {
      const mine = localMessageId(first, true);
      ids.add(mine);
      ids.add(`${mine}-sent`);
      ids.add(localMessageId(first, false));
    }
    const copies = await this.#storage.getMany<StoredRecord>(
      [...ids].map((id) => key.msg(this.owner, id)),
    );
    return copies
      .flatMap((copy) => copy ? [recordOf(copy)] : [])
      .filter((copy) => copy.thread === thread)
      .map(summaryOf)
      .sort((a, b) =>
        a.date.getTime() - b.date.getTime() || a.id.localeCompare(b.id)
      );
  }

  /** Changes after `since`, at most `limit`. */
  async changes(
    since: number,
    limit: number,
  ): Promise<
    { changes: Change[]; seq: number; reset: boolean; more: boolean }
  > {
    const { state } = await this.state();
    if (since > state.seq) {
      return { changes: [], seq: state.seq, reset: true, more: false };
    }
    const oldest = Math.max(1, state.seq - KEEP_CHANGES + 1);
    if (since + 1 < oldest && state.seq > 0) {
      return { changes: [], seq: state.seq, reset: true, more: false };
    }
    const page = await this.#storage.list<StoredChange>(["chg", this.owner], {
      start: key.chg(this.owner, since + 1),
      limit,
    });
    const changes = page.items
      .map(({ key, value }): Change =>
        Array.isArray(value)
          ? { seq: Number(key[2]), type: "new", id: value[0], folder: value[1] }
          : value
      )
      .filter((c) => c.seq > since);
    // New copies are stored without their summary: add it from the copy
    // (gone when it was deleted since; a later change says so).
    const added = changes.filter((c) => c.type === "new" && !c.summary);
    const copies = await this.#storage.getMany<StoredRecord>(
      added.map((c) => key.msg(this.owner, c.id)),
    );
    added.forEach((c, i) => {
      const copy = copies[i];
      if (copy) c.summary = summaryOf(recordOf(copy));
    });
    const last = changes.at(-1)?.seq ?? since;
    return { changes, seq: state.seq, reset: false, more: last < state.seq };
  }
}
