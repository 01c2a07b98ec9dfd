/**
 * Removing what no message needs: uploads never finished or never sent,
 * transfers from other servers never finished, and stored attachments no
 * message refers to (uploads never attached, blobs received for a message
 * that never arrived, attachments of deleted messages), each once it has
 * been left alone longer than the expiry (`AMTP_MESSAGES_BLOB_EXPIRY`).
 *
 * A blob's `at` is set when it is stored and each time a message takes it
 * (a send, a delivery from another server: {@link touchBlob}); it is removed
 * only when, checked against the record read before the messages were
 * scanned, nobody touched it meanwhile. Records written before `at` existed
 * get it at the first sweep, so an upgrade removes nothing at once.
 *
 * @module
 */

import type {
  ModuleContext,
  ModuleStorage,
  StorageEntry,
} from "../../../workers/sdk/mod.ts";
import { type BlobMeta, CHUNK_SIZE, type Upload } from "./attachments.ts";
import { type MessageRecord, recordOf, type StoredRecord } from "./mailbox.ts";
import { type Incoming, transferKeys } from "./transfer.ts";

/** What one sweep removed. */
export interface Swept {
  /** Uploads (unfinished: with their chunks). */
  uploads: number;
  /** Unfinished transfers from other servers, with their chunks. */
  transfers: number;
  /** Stored attachments no message refers to, with their chunks. */
  blobs: number;
}

/** Entries listed per storage call. */
const PAGE = 500;

/** Every entry under `prefix`, page by page. */
async function* entries<T>(
  storage: ModuleStorage,
  prefix: (string | number)[],
): AsyncGenerator<StorageEntry<T>> {
  let cursor: string | undefined;
  do {
    const page = await storage.list<T>(prefix, { limit: PAGE, cursor });
    yield* page.items;
    cursor = page.items.length === PAGE ? page.cursor : undefined;
  } while (cursor);
}

/**
 * Remove chunks `0..count` of a blob (one more than counted: a chunk is
 * written before the record that counts it).
 */
async function deleteChunks(
  storage: ModuleStorage,
  blob: string,
  count: number,
): Promise<void> {
  for (let index = 0; index <= count; index++) {
    await storage.delete(["blob", blob, index]);
  }
}

/**
 * Delete `entry` unless it changed since it was read; a record without `at`
 * is given `now` instead (its age starts at the first sweep). True when
 * deleted.
 */
async function removeIfOld<T extends { at?: number }>(
  storage: ModuleStorage,
  entry: StorageEntry<T>,
  now: number,
  expiryMs: number,
  extra: {
    op: "delete" | "check";
    key: (string | number)[];
    versionstamp?: string | null;
  }[] = [],
): Promise<boolean> {
  const check = {
    op: "check" as const,
    key: entry.key,
    versionstamp: entry.versionstamp,
  };
  if (entry.value.at === undefined) {
    await storage.atomic([check, {
      op: "set",
      key: entry.key,
      value: { ...entry.value, at: now },
    }]);
    return false;
  }
  if (now - entry.value.at <= expiryMs) return false;
  return await storage.atomic([
    check,
    { op: "delete", key: entry.key },
    ...extra.map((e) =>
      e.op === "check"
        ? {
          op: "check" as const,
          key: e.key,
          versionstamp: e.versionstamp ?? null,
        }
        : { op: "delete" as const, key: e.key }
    ),
  ]);
}

/** The blob ids a message copy refers to. */
function referenced(record: MessageRecord): string[] {
  const email = record.email;
  return [
    ...record.attachments,
    ...(email ? [email.source, ...(email.html ? [email.html] : [])] : []),
  ].map((a) => a.blob ?? a.id);
}

/**
 * One sweep at time `now` (ms since the epoch): remove what has been left
 * alone longer than `expiryMs`.
 */
export async function sweep(
  storage: ModuleStorage,
  options: { now: number; expiryMs: number },
): Promise<Swept> {
  const { now, expiryMs } = options;
  const swept: Swept = { uploads: 0, transfers: 0, blobs: 0 };
  // Uploads: an unfinished one with its chunks; a finished one's record
  // (its blob stays while a message refers to it: below).
  for await (const entry of entries<Upload>(storage, ["upload"])) {
    if (!(await removeIfOld(storage, entry, now, expiryMs))) continue;
    swept.uploads++;
    if (!entry.value.done) {
      await deleteChunks(storage, entry.value.blob, entry.value.next_index);
    }
  }
  // Transfers from other servers that never finished.
  for await (const entry of entries<Incoming>(storage, ["blob_in"])) {
    if (!(await removeIfOld(storage, entry, now, expiryMs))) continue;
    swept.transfers++;
    await deleteChunks(
      storage,
      entry.value.blob,
      Math.ceil(entry.value.received / CHUNK_SIZE),
    );
  }
  // Stored blobs: those left alone past the expiry, unless a message
  // refers to them.
  const candidates: StorageEntry<BlobMeta>[] = [];
  for await (const entry of entries<BlobMeta>(storage, ["blob_meta"])) {
    if (entry.value.at === undefined) {
      await removeIfOld(storage, entry, now, expiryMs);
    } else if (now - entry.value.at > expiryMs) candidates.push(entry);
  }
  if (candidates.length === 0) return swept;
  const used = new Set<string>();
  for await (const entry of entries<StoredRecord>(storage, ["msg"])) {
    for (const id of referenced(recordOf(entry))) used.add(id);
  }
  for (const entry of candidates) {
    const meta = entry.value;
    if (used.has(meta.id)) continue;
    // A blob received from another server is found by its hash: that entry
    // goes with it when it names this blob.
    const byHash = await storage.get<string>(transferKeys.byHash(meta.sha256));
    const extra = byHash?.value === meta.id
      ? [
        {
          op: "check" as const,
          key: byHash.key,
          versionstamp: byHash.versionstamp,
        },
        { op: "delete" as const, key: byHash.key },
      ]
      : [];
    if (!(await removeIfOld(storage, entry, now, expiryMs, extra))) continue;
    swept.blobs++;
    await deleteChunks(storage, meta.id, meta.chunks);
  }
  return swept;
}

/**
 * Sweep now and then every `intervalMs` (the module's `start`); logs what
 * each sweep removed. Returns a function that stops it.
 */
export function startSweeper(
  ctx: ModuleContext,
  options: { expiryMs: number; intervalMs: number; now?: () => number },
): () => void {
  const now = options.now ?? Date.now;
  let running = false;
  const run = async () => {
    if (running) return;
    running = true;
    try {
      const swept = await sweep(ctx.storage, {
        now: now(),
        expiryMs: options.expiryMs,
      });
      if (swept.uploads || swept.transfers || swept.blobs) {
        ctx.log("info", "attachments_swept", { ...swept });
      }
    } catch (error) {
      ctx.log("warn", "attachments_sweep_failed", { error: String(error) });
    } finally {
      running = false;
    }
  };
  const timer = setInterval(run, options.intervalMs);
  run();
  return () => clearInterval(timer);
}
