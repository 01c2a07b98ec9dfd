/**
 * Attachments: uploaded in chunks before a send (resumable: the client asks
 * how far an upload got and goes on from there), verified against the SHA-256
 * the client announced, stored once, and read back in chunks by anyone who
 * holds a message that carries them.
 *
 * Keys: `["upload", owner, uploadId]` -> {@link Upload};
 * `["blob", blobId, index]` -> chunk bytes; `["blob_meta", blobId]` -> {@link BlobMeta}.
 *
 * @module
 */

import { createHash } from "node:crypto";
import {
  type AtomicOp,
  ModuleError,
  type ModuleStorage,
} from "../../../workers/sdk/mod.ts";
import { maxAttachmentFor } from "./settings.ts";

/** Bytes per chunk, uploads and downloads alike (the last one may be shorter). */
export const CHUNK_SIZE = 256 * 1024;

/** Largest attachment in bytes: `AMTP_MESSAGES_MAX_ATTACHMENT`, default 25 MiB. */
export function maxAttachment(): number {
  try {
    const value = Number(Deno.env.get("AMTP_MESSAGES_MAX_ATTACHMENT"));
    if (Number.isInteger(value) && value > 0) return value;
  } catch {
    // No permission: the default.
  }
  return 25 * 1024 * 1024;
}

/** An upload in progress. */
export interface Upload {
  /** Upload id. */
  id: string;
  /** Who uploads. */
  owner: string;
  /** File name. */
  name: string;
  /** MIME type. */
  type: string;
  /** Announced size. */
  size: number;
  /** Announced SHA-256, hex. */
  sha256: string;
  /** Chunks received (the next index expected). */
  next_index: number;
  /** Bytes received. */
  received: number;
  /** Blob id the chunks go to. */
  blob: string;
  /** Set once verified. */
  done: boolean;
  /** Content-ID (without brackets) HTML bodies name it by (`cid:`), if any. */
  content_id?: string;
  /** Shown within the body (an inline image) rather than as a file. */
  inline?: boolean;
  /** Last activity, ms since the epoch (sweep.ts removes it after the expiry). */
  at?: number;
}

/** A stored attachment. */
export interface BlobMeta {
  /** Blob id. */
  id: string;
  /** Uploader. */
  owner: string;
  /** File name. */
  name: string;
  /** MIME type. */
  type: string;
  /** Bytes. */
  size: number;
  /** SHA-256, hex. */
  sha256: string;
  /** Chunks. */
  chunks: number;
  /** Content-ID (without brackets) HTML bodies name it by (`cid:`), if any. */
  content_id?: string;
  /** Shown within the body (an inline image) rather than as a file. */
  inline?: boolean;
  /**
   * When it was stored or last attached to a message, ms since the epoch:
   * unreferenced for longer than the expiry, it is removed (sweep.ts).
   */
  at?: number;
}

/**
 * Mark a stored blob as just used (attached to a message being sent or
 * received); null when it is gone. Checked against the record read, so a
 * sweep that removes it meanwhile is seen, never undone.
 */
export async function touchBlob(
  storage: ModuleStorage,
  blobId: string,
  now = Date.now(),
): Promise<BlobMeta | null> {
  for (let attempt = 0; attempt < 10; attempt++) {
    const entry = await storage.get<BlobMeta>(["blob_meta", blobId]);
    if (!entry) return null;
    const meta = { ...entry.value, at: now };
    const written = await storage.atomic([
      {
        op: "check",
        key: ["blob_meta", blobId],
        versionstamp: entry.versionstamp,
      },
      { op: "set", key: ["blob_meta", blobId], value: meta },
    ]);
    if (written) return meta;
  }
  throw new ModuleError("handler_failed", `blob ${blobId} changes too often`);
}

function hex(bytes: ArrayBuffer): string {
  return Array.from(
    new Uint8Array(bytes),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

function randomId(): string {
  return hex(crypto.getRandomValues(new Uint8Array(12)).buffer);
}

/** Attachment operations for one user. */
export class Attachments {
  readonly #storage: ModuleStorage;
  readonly #owner: string;

  /** Bind to a user. */
  constructor(storage: ModuleStorage, owner: string) {
    this.#storage = storage;
    this.#owner = owner;
  }

  async #upload(id: string): Promise<Upload> {
    const entry = await this.#storage.get<Upload>(["upload", this.#owner, id]);
    if (!entry) throw new ModuleError("not_found", `no upload ${id}`);
    return entry.value;
  }

  /** Start an upload. */
  async start(
    meta: {
      name: string;
      type: string;
      size: number;
      sha256: string;
      content_id?: string;
      inline?: boolean;
    },
  ): Promise<Upload> {
    const limit = maxAttachmentFor(this.#owner, maxAttachment());
    if (meta.size > limit) {
      throw new ModuleError(
        "limit_exceeded",
        `attachments are at most ${limit} bytes`,
      );
    }
    if (!/^[0-9a-f]{64}$/.test(meta.sha256)) {
      throw new ModuleError(
        "invalid_parameter",
        'parameter "sha256" must be 64 hex digits',
        { parameter: "sha256" },
      );
    }
    const upload: Upload = {
      id: randomId(),
      owner: this.#owner,
      ...meta,
      next_index: 0,
      received: 0,
      blob: randomId(),
      done: false,
      at: Date.now(),
    };
    await this.#storage.set(["upload", this.#owner, upload.id], upload);
    return upload;
  }

  /** Where an upload stands. */
  status(id: string): Promise<Upload> {
    return this.#upload(id);
  }

  /** Store chunk `index`; a chunk already stored is acknowledged again (retries are safe). */
  async chunk(id: string, index: number, data: Uint8Array): Promise<Upload> {
    const upload = await this.#upload(id);
    if (upload.done) {
      throw new ModuleError("invalid_parameter", "the upload is finished", {
        parameter: "upload_id",
      });
    }
    if (index < upload.next_index) return upload;
    if (index > upload.next_index) {
      throw new ModuleError(
        "invalid_parameter",
        `expected chunk ${upload.next_index}`,
        {
          parameter: "index",
          next_index: upload.next_index,
        },
      );
    }
    const last = upload.received + data.byteLength >= upload.size;
    if (data.byteLength !== CHUNK_SIZE && !last) {
      throw new ModuleError(
        "invalid_parameter",
        `chunks are ${CHUNK_SIZE} bytes except the last`,
        { parameter: "data" },
      );
    }
    if (upload.received + data.byteLength > upload.size) {
      throw new ModuleError(
        "invalid_parameter",
        "more bytes than the announced size",
        { parameter: "data" },
      );
    }
    await this.#storage.set(["blob", upload.blob, index], data);
    const next = {
      ...upload,
      next_index: index + 1,
      received: upload.received + data.byteLength,
      at: Date.now(),
    };
    await this.#storage.set(["upload", this.#owner, id], next);
    return next;
  }

  /** Verify size and checksum; the attachment can then be sent. */
  async finish(id: string): Promise<BlobMeta> {
    const upload = await this.#upload(id);
    if (upload.received !== upload.size) {
      throw new ModuleError(
        "invalid_parameter",
        `received ${upload.received} of ${upload.size} bytes`,
        {
          parameter: "upload_id",
          next_index: upload.next_index,
        },
      );
    }
    // Hashed chunk by chunk: never the whole file in memory.
    const hash = createHash("sha256");
    for (let i = 0; i < upload.next_index; i++) {
      const chunk = await this.#storage.get<Uint8Array>([
        "blob",
        upload.blob,
        i,
      ]);
      if (!chunk) {
        throw new ModuleError("handler_failed", `chunk ${i} is missing`);
      }
      hash.update(chunk.value);
    }
    const digest = hash.digest("hex");
    if (digest !== upload.sha256) {
      throw new ModuleError(
        "invalid_parameter",
        `checksum mismatch: got ${digest}`,
        { parameter: "sha256" },
      );
    }
    const meta: BlobMeta = {
      id: upload.blob,
      owner: this.#owner,
      name: upload.name,
      type: upload.type,
      size: upload.size,
      sha256: upload.sha256,
      chunks: upload.next_index,
      ...(upload.content_id ? { content_id: upload.content_id } : {}),
      ...(upload.inline ? { inline: true } : {}),
      at: Date.now(),
    };
    await this.#storage.set(["blob_meta", upload.blob], meta);
    await this.#storage.set(["upload", this.#owner, id], {
      ...upload,
      done: true,
      at: meta.at,
    });
    return meta;
  }

  /** A finished attachment of this user, to send (marked as used now). */
  async own(blobId: string): Promise<BlobMeta> {
    const meta = await this.#storage.get<BlobMeta>(["blob_meta", blobId]);
    const touched = meta && meta.value.owner === this.#owner
      ? await touchBlob(this.#storage, blobId)
      : null;
    if (!touched) {
      throw new ModuleError("not_found", `no finished attachment ${blobId}`, {
        parameter: "attachments",
      });
    }
    return touched;
  }

  /** Read chunk `index` of a blob (the caller checked access). */
  async read(blobId: string, index: number): Promise<Uint8Array> {
    const chunk = await this.#storage.get<Uint8Array>(["blob", blobId, index]);
    if (!chunk) throw new ModuleError("not_found", `no chunk ${index}`);
    return chunk.value;
  }
}

/** Blobs up to this size are written in one atomic operation. */
const SMALL_BLOB = 48 * 1024;

/**
 * Store bytes as a finished attachment under `id` (chunks, then its meta),
 * for content that did not come through an upload: parts of a message
 * received by email. Writing it again writes the same.
 */
export async function storeBlob(
  storage: ModuleStorage,
  blob: { id: string; owner: string; name: string; type: string },
  content: Uint8Array,
  /** Where a small blob's writes go instead (the atomic operation of the message naming it). */
  into?: AtomicOp[],
): Promise<BlobMeta> {
  const chunks = Math.ceil(content.byteLength / CHUNK_SIZE);
  const meta: BlobMeta = {
    ...blob,
    size: content.byteLength,
    // node:crypto's hash: synchronous, a quarter of WebCrypto's CPU for mail-sized content.
    sha256: createHash("sha256").update(content).digest("hex"),
    chunks,
    at: Date.now(),
  };
  // A small one (most mail) in one write; a large one chunk by chunk, its
  // meta last.
  if (content.byteLength <= SMALL_BLOB) {
    const ops: AtomicOp[] = [
      ...(chunks
        ? [{
          op: "set" as const,
          key: ["blob", blob.id, 0],
          value: content.slice(),
        }]
        : []),
      { op: "set", key: ["blob_meta", blob.id], value: meta },
    ];
    if (into) into.push(...ops);
    else await storage.atomic(ops);
    return meta;
  }
  for (let i = 0; i < chunks; i++) {
    await storage.set(
      ["blob", blob.id, i],
      content.slice(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE),
    );
  }
  await storage.set(["blob_meta", blob.id], meta);
  return meta;
}

/** Read a whole attachment's bytes (the caller checked access). */
export async function readBlob(
  storage: ModuleStorage,
  ref: { id: string; size: number },
): Promise<Uint8Array> {
  const out = new Uint8Array(ref.size);
  let at = 0;
  for (let i = 0; at < ref.size; i++) {
    const chunk = await storage.get<Uint8Array>(["blob", ref.id, i]);
    if (!chunk) throw new ModuleError("not_found", `chunk ${i} is missing`);
    out.set(chunk.value, at);
    at += chunk.value.byteLength;
  }
  return out;
}
