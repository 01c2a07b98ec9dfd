/**
 * Attachments between servers, the module's half (docs/PROTOCOL.md section
 * 14.7; the core's half is core/federation/blobs.ts):
 *
 * - `blob_read` (sending server): a chunk of a blob its sender queued.
 * - `blob_offer` (receiving server): how many bytes of a blob are here —
 *   all of it once any server delivered it (one copy per server, found by
 *   SHA-256), else what this origin sent so far — or a refusal: larger than
 *   attachments here may be, or every recipient's mailbox too full for it.
 * - `blob_put`: the chunk at exactly the offset held, stored with the
 *   progress in one atomic write; after the last one the whole blob is hashed
 *   chunk by chunk (never held whole) and kept only when it matches.
 *
 * Keys: `["blob_in", origin, sha256]` -> {@link Incoming} (a transfer in
 * progress, per origin so that one peer cannot spoil another's);
 * `["blob_by_hash", sha256]` -> blob id of a verified received blob; the
 * chunks and meta are those of attachments.ts.
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  type InboundDelivery,
  type InboundResult,
  type ModuleContext,
  ModuleError,
  type ModuleStorage,
} from "../../../workers/sdk/mod.ts";
import {
  type BlobMeta,
  CHUNK_SIZE,
  maxAttachment,
  touchBlob,
} from "./attachments.ts";
import { sha256Hex } from "./ids.ts";
import { attachmentLimits, maxAttachmentFor } from "./settings.ts";
import { Mailbox } from "./mailbox.ts";

/** A blob arriving from another server. */
interface Incoming {
  /** Where its chunks go. */
  blob: string;
  /** Announced size. */
  size: number;
  /** Bytes stored (a multiple of {@link CHUNK_SIZE} until the end). */
  received: number;
  /** Last chunk stored, ms since the epoch (sweep.ts removes it after the expiry). */
  at?: number;
}

/** Unfinished transfers one origin may keep on this server. */
export const MAX_UNFINISHED = 64;

const key = {
  incoming: (origin: string, sha256: string) => ["blob_in", origin, sha256],
  byHash: (sha256: string) => ["blob_by_hash", sha256],
  meta: (blob: string) => ["blob_meta", blob],
  chunk: (blob: string, index: number) => ["blob", blob, index],
};

/** Keys of this file, for the sweep. */
export const transferKeys = key;

/** A blob arriving from another server (its record). */
export type { Incoming };

/** The blob id of a verified blob received from another server, or null. */
export async function receivedBlob(
  storage: ModuleStorage,
  sha256: string,
): Promise<string | null> {
  return (await storage.get<string>(key.byHash(sha256)))?.value ?? null;
}

function payloadOf(delivery: InboundDelivery): Record<string, unknown> {
  const p = delivery.payload;
  return p && typeof p === "object" ? p as Record<string, unknown> : {};
}

function whole(value: unknown, name: string): number {
  if (typeof value !== "number" || !Number.isSafeInteger(value) || value < 0) {
    throw new ModuleError("invalid_parameter", `${name} is a whole number`, {
      parameter: name,
    });
  }
  return value;
}

/** Refuse a blob larger than every recipient may receive here. */
function checkSize(size: number, to: string[]): void {
  const limits = attachmentLimits();
  const limit = Math.max(
    ...to.map((a) => maxAttachmentFor(a, maxAttachment(), limits)),
  );
  if (size > limit) {
    throw new ModuleError(
      "limit_exceeded",
      `attachments for these recipients are at most ${limit} bytes here`,
    );
  }
}

/** `blob_read`: a chunk of a blob of the delivery's sender. */
export async function blobRead(
  delivery: InboundDelivery,
  ctx: ModuleContext,
): Promise<InboundResult> {
  const p = payloadOf(delivery);
  const blob = typeof p.blob === "string" ? p.blob : "";
  const offset = whole(p.offset, "offset");
  const meta = await ctx.storage.get<BlobMeta>(key.meta(blob));
  if (
    !meta || meta.value.owner !== delivery.from ||
    meta.value.sha256 !== delivery.id || offset % CHUNK_SIZE !== 0 ||
    offset >= meta.value.size
  ) {
    throw new ModuleError("not_found", `no blob ${blob} at ${offset}`);
  }
  const chunk = await ctx.storage.get<Uint8Array>(
    key.chunk(blob, offset / CHUNK_SIZE),
  );
  if (!chunk) throw new ModuleError("not_found", `no chunk at ${offset}`);
  return { recipients: [], blob: { offset, data: chunk.value } };
}

/**
 * Refuse a blob no recipient has room for (each one's own quota is checked
 * again when the message arrives).
 */
async function checkRoom(
  delivery: InboundDelivery,
  ctx: ModuleContext,
  size: number,
  quotaDefault: number,
): Promise<void> {
  const resolutions = await ctx.accounts.resolve(delivery.to);
  const mailboxes = resolutions.flatMap((r) => r.mailboxes);
  for (const m of mailboxes) {
    const { state } = await new Mailbox(ctx.storage, m.address).state();
    if (state.used + size <= (m.quota || quotaDefault)) return;
  }
  throw new ModuleError(
    "limit_exceeded",
    mailboxes.length
      ? "the recipients' mailboxes are too full for this attachment"
      : "no recipient of this attachment has a mailbox here",
  );
}

/** `blob_offer`: bytes held of a blob, or a refusal. */
export async function blobOffer(
  delivery: InboundDelivery,
  ctx: ModuleContext,
  quotaDefault: number,
): Promise<InboundResult> {
  const size = whole(payloadOf(delivery).size, "size");
  checkSize(size, delivery.to);
  const sha256 = delivery.id;
  const held = await receivedBlob(ctx.storage, sha256);
  // Held already (and kept: its message is on its way).
  if (held && await touchBlob(ctx.storage, held)) {
    return { recipients: [], blob: { offset: size } };
  }
  await checkRoom(delivery, ctx, size, quotaDefault);
  const origin = String(delivery.peer_domain ?? "");
  const entry = await ctx.storage.get<Incoming>(key.incoming(origin, sha256));
  const offset = entry && entry.value.size === size ? entry.value.received : 0;
  return { recipients: [], blob: { offset } };
}

/** `blob_put`: store the chunk at the offset held; verify after the last. */
export async function blobPut(
  delivery: InboundDelivery,
  ctx: ModuleContext,
  quotaDefault: number,
): Promise<InboundResult> {
  const p = payloadOf(delivery);
  const size = whole(p.size, "size");
  const offset = whole(p.offset, "offset");
  const data = p.data instanceof Uint8Array ? p.data : null;
  if (!data) {
    throw new ModuleError("invalid_parameter", "a put carries bytes", {
      parameter: "data",
    });
  }
  checkSize(size, delivery.to);
  const sha256 = delivery.id;
  const storage = ctx.storage;
  const known = await receivedBlob(storage, sha256);
  if (known && await touchBlob(storage, known)) {
    return { recipients: [], blob: { offset: size } };
  }
  const origin = String(delivery.peer_domain ?? "");
  const stateKey = key.incoming(origin, sha256);
  const entry = await storage.get<Incoming>(stateKey);
  if (!entry) {
    // A new transfer (an offer is not required): room for it, and one
    // origin keeps a bounded number unfinished.
    await checkRoom(delivery, ctx, size, quotaDefault);
    const open = await storage.list(["blob_in", origin], {
      limit: MAX_UNFINISHED,
    });
    if (open.items.length >= MAX_UNFINISHED) {
      throw new ModuleError(
        "limit_exceeded",
        `${origin} has ${MAX_UNFINISHED} unfinished attachment transfers here: finish them first`,
      );
    }
  }
  const state: Incoming = entry && entry.value.size === size ? entry.value : {
    blob: "r" + sha256Hex(`${origin}\n${sha256}`).slice(0, 31),
    size,
    received: 0,
  };
  if (offset < state.received) {
    // Stored already (a retry after a lost answer): nothing is written twice.
    return { recipients: [], blob: { offset: state.received } };
  }
  if (offset > state.received) {
    throw new ModuleError(
      "invalid_parameter",
      `expected the bytes at ${state.received}`,
      { parameter: "offset", offset: state.received },
    );
  }
  const end = offset + data.byteLength;
  if (end > size || (data.byteLength !== CHUNK_SIZE && end !== size)) {
    throw new ModuleError(
      "invalid_parameter",
      `chunks are ${CHUNK_SIZE} bytes except the last, and end at the size`,
      { parameter: "data" },
    );
  }
  // The chunk first, then the progress that counts it: a crash between the
  // two leaves the chunk to be written again, never counted unwritten.
  await storage.set(key.chunk(state.blob, offset / CHUNK_SIZE), data);
  const next: Incoming = { ...state, received: end, at: Date.now() };
  const stored = await storage.atomic([
    { op: "check", key: stateKey, versionstamp: entry?.versionstamp ?? null },
    { op: "set", key: stateKey, value: next },
  ]);
  if (!stored) {
    throw new ModuleError("invalid_parameter", "a concurrent put: retry", {
      parameter: "offset",
    });
  }
  if (end < size) return { recipients: [], blob: { offset: end } };
  return {
    recipients: [],
    blob: { offset: await verify(storage, next, sha256, stateKey) },
  };
}

/** Hash the stored chunks; keep the blob when they match, else start over. */
async function verify(
  storage: ModuleStorage,
  state: Incoming,
  sha256: string,
  stateKey: (string | number)[],
): Promise<number> {
  const chunks = Math.ceil(state.size / CHUNK_SIZE);
  const hash = createHash("sha256");
  for (let i = 0; i < chunks; i++) {
    const chunk = await storage.get<Uint8Array>(key.chunk(state.blob, i));
    if (!chunk) throw new ModuleError("internal", `chunk ${i} is missing`);
    hash.update(chunk.value);
  }
  const digest = hash.digest("hex");
  if (digest !== sha256) {
    await storage.delete(stateKey);
    throw new ModuleError(
      "invalid_parameter",
      `the bytes hash to ${digest}, not ${sha256}: discarded`,
      { parameter: "sha256" },
    );
  }
  const meta: BlobMeta = {
    id: state.blob,
    owner: "",
    name: "",
    type: "",
    size: state.size,
    sha256,
    chunks,
    at: Date.now(),
  };
  await storage.atomic([
    { op: "set", key: key.meta(state.blob), value: meta },
    { op: "set", key: key.byHash(sha256), value: state.blob },
    { op: "delete", key: stateKey },
  ]);
  return state.size;
}
