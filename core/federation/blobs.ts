/**
 * Attachments between servers (docs/PROTOCOL.md section 14.7): the sending
 * server pushes a queued delivery's blobs in the same authenticated s2s
 * session, before `s2s_deliver`, with `s2s_blob`:
 *
 * - `offer` names the blob (SHA-256, size) and the recipients; the receiver
 *   answers how many bytes of it it holds already (0, part of it after an
 *   interrupted transfer, or all of it: one copy per receiving server), or
 *   refuses it (larger than it takes, recipients over quota).
 * - `put` sends the chunk at exactly that offset; the receiver stores it
 *   durably before answering the new offset, and checks the whole blob's
 *   SHA-256 when the last chunk arrives (bytes that do not hash to the
 *   announced value are discarded and refused).
 *
 * The receiving core checks the peer and the recipients; the receiving
 * module stores the bytes (its `inbound` with kinds `blob_offer`,
 * `blob_put`); the sending module reads them (`blob_read`).
 *
 * @module
 */

import {
  type Command,
  ErrorCode,
  type HandlerContext,
  ProtocolError,
} from "../protocol/mod.ts";
import { splitAddress } from "../../shared/identity.ts";
import type { OutboundItem } from "../../kv/outbound.ts";
import type { BlobRef, DeliverToModule, InboundResult } from "./delivery.ts";
import {
  addressOf,
  hostsDomain,
  type InboundDeps,
  peerCommand,
} from "./inbound.ts";
import type { PeerClient } from "./peers.ts";

/** Bytes per `put` (the last chunk of a blob may be shorter). */
export const BLOB_CHUNK = 256 * 1024;

/** Read the chunk of a local blob at `offset` (the sending module's `blob_read`). */
export type ReadBlobChunk = (
  item: OutboundItem,
  blob: BlobRef,
  offset: number,
) => Promise<Uint8Array>;

function offsetOf(result: InboundResult, what: string): number {
  const offset = result.blob?.offset;
  if (typeof offset !== "number" || !Number.isSafeInteger(offset)) {
    throw new ProtocolError(ErrorCode.INTERNAL, `${what}: no offset`);
  }
  return offset;
}

/**
 * Push an item's blobs to the receiving server, each from the offset the
 * receiver holds; resolves once the receiver holds all of them.
 *
 * @throws {ProtocolError} the receiver's refusal (LIMIT_EXCEEDED: too large
 * or over quota), or what failed on the way
 */
export async function pushBlobs(
  session: Pick<PeerClient, "call">,
  item: OutboundItem,
  read: ReadBlobChunk,
): Promise<void> {
  for (const blob of item.blobs ?? []) {
    const common = {
      module: item.module,
      from: item.from,
      to: item.to,
      sha256: blob.sha256,
      size: blob.size,
    };
    let { offset } = await session.call<{ offset: number }>("s2s_blob", {
      ...common,
      op: "offer",
    });
    while (offset < blob.size) {
      const data = await read(item, blob, offset);
      const expected = Math.min(BLOB_CHUNK, blob.size - offset);
      if (data.byteLength !== expected) {
        throw new ProtocolError(
          ErrorCode.INTERNAL,
          `blob ${blob.id}: read ${data.byteLength} bytes at ${offset}, expected ${expected}`,
        );
      }
      const answer = await session.call<{ offset: number }>("s2s_blob", {
        ...common,
        op: "put",
        offset,
        data,
      });
      if (answer.offset <= offset) {
        throw new ProtocolError(
          ErrorCode.INTERNAL,
          `blob ${blob.sha256}: the receiver stays at ${answer.offset}`,
        );
      }
      offset = answer.offset;
    }
  }
}

/** Read a chunk of a blob through the sending module's `blob_read`. */
export function moduleBlobReader(deliver: DeliverToModule): ReadBlobChunk {
  return async (item, blob, offset) => {
    const result = await deliver(item.module, {
      kind: "blob_read",
      from: item.from,
      to: [],
      id: blob.sha256,
      payload: { blob: blob.id, size: blob.size, offset },
    });
    const data = result.blob?.data;
    if (!(data instanceof Uint8Array)) {
      throw new ProtocolError(
        ErrorCode.INTERNAL,
        `blob ${blob.id}: the module read no bytes`,
      );
    }
    return data;
  };
}

/** The receiving side: `s2s_blob`. */
export function blobCommands(deps: InboundDeps): Command[] {
  return [peerCommand(deps, {
    name: "s2s_blob",
    params: {
      module: { type: "string", max: 64 },
      op: { type: "string", max: 8 },
      from: { type: "string", max: 320 },
      to: { type: "array", items: "string", min: 1, max: 100, itemMax: 320 },
      sha256: { type: "string", min: 64, max: 64 },
      size: { type: "number", min: 0 },
      offset: { type: "number", min: 0, optional: true },
      data: { type: "binary", max: BLOB_CHUNK, optional: true },
    },
    handler: async (p, ctx: HandlerContext, peer) => {
      const invalid = (parameter: string, message: string) =>
        new ProtocolError(ErrorCode.INVALID_PARAMETER, message, { parameter });
      if (p.op !== "offer" && p.op !== "put") {
        throw invalid("op", 'op is "offer" or "put"');
      }
      if (!/^[0-9a-f]{64}$/.test(p.sha256)) {
        throw invalid("sha256", "sha256 is 64 lower-case hex digits");
      }
      if (!Number.isSafeInteger(p.size)) {
        throw invalid("size", "size is a whole number of bytes");
      }
      if (await hostsDomain(deps, peer.domain)) {
        throw new ProtocolError(
          ErrorCode.S2S_NOT_DELEGATED,
          `${peer.domain} is hosted on this server: no other server delivers for it`,
        );
      }
      const from = addressOf(p.from);
      if (!from || splitAddress(from)[1] !== peer.domain) {
        throw new ProtocolError(
          ErrorCode.S2S_FROM_MISMATCH,
          `${p.from} is not an address of ${peer.domain}, the domain this server authenticated for`,
        );
      }
      // Bytes are taken only for recipients this session may deliver to.
      const to: string[] = [];
      for (const raw of p.to as string[]) {
        const address = addressOf(raw);
        const domain = address ? splitAddress(address)[1] : "";
        if (
          address && peer.destinations.includes(domain) &&
          await hostsDomain(deps, domain)
        ) to.push(address);
      }
      if (to.length === 0) {
        throw new ProtocolError(
          ErrorCode.S2S_WRONG_DESTINATION,
          "no recipient of this blob is hosted here for this session",
        );
      }
      let payload: Record<string, unknown> = { size: p.size };
      if (p.op === "put") {
        if (p.offset === undefined || !Number.isSafeInteger(p.offset)) {
          throw invalid("offset", "a put names its offset");
        }
        if (!p.data) throw invalid("data", "a put carries data");
        payload = { size: p.size, offset: p.offset, data: p.data };
      }
      const result = await deps.deliver(p.module, {
        kind: p.op === "offer" ? "blob_offer" : "blob_put",
        from,
        to,
        id: p.sha256,
        payload,
        peer: peer.host,
        peer_domain: peer.domain,
      });
      const offset = offsetOf(result, `s2s_blob ${p.op}`);
      ctx.log.info(p.op === "offer" ? "s2s_blob_offer" : "s2s_blob_stored", {
        host: peer.host,
        sha256: p.sha256,
        size: p.size,
        ...(p.op === "put" ? { at: p.offset, bytes: p.data!.byteLength } : {}),
        offset,
      });
      return { offset };
    },
  })];
}
