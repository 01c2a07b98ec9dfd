/**
 * The messages module's attachment commands, one function each; mod.ts
 * names them. See docs/PROTOCOL.md, section 13.2.
 *
 * @module
 */

import { type ModuleContext, ModuleError } from "../../../workers/sdk/mod.ts";
import { Attachments, CHUNK_SIZE } from "./attachments.ts";
import { Mailbox } from "./mailbox.ts";
import { bytes, optBool, optInt, optStr, type Params, str } from "./params.ts";

/** `content_id`: what `cid:` URLs of an HTML body name (no brackets, no spaces). */
function contentId(p: Params): { content_id?: string } {
  const id = optStr(p, "content_id", 255);
  if (id === undefined) return {};
  if (!/^[\x21-\x3b\x3d\x3f-\x7e]+$/.test(id)) {
    throw new ModuleError(
      "invalid_parameter",
      'parameter "content_id" is printable ASCII without spaces or angle brackets',
      { parameter: "content_id" },
    );
  }
  return { content_id: id };
}

/** `attachment_upload`. */
export async function attachmentUpload(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const upload = await new Attachments(ctx.storage, ctx.caller.address)
    .start({
      name: str(p, "name", 255),
      type: optStr(p, "type", 128) ?? "application/octet-stream",
      size: optInt(p, "size", 0, Number.MAX_SAFE_INTEGER) ?? 0,
      sha256: str(p, "sha256", 64).toLowerCase(),
      ...contentId(p),
      ...(optBool(p, "inline") ? { inline: true } : {}),
    });
  return { upload_id: upload.id, chunk_size: CHUNK_SIZE, next_index: 0 };
}

/** `attachment_upload_chunk`. */
export async function attachmentUploadChunk(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const upload = await new Attachments(ctx.storage, ctx.caller.address)
    .chunk(
      str(p, "upload_id", 64),
      optInt(p, "index", 0, 1_000_000) ?? 0,
      bytes(p, "data", CHUNK_SIZE),
    );
  return { next_index: upload.next_index, received: upload.received };
}

/** `attachment_upload_status`. */
export async function attachmentUploadStatus(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const upload = await new Attachments(ctx.storage, ctx.caller.address)
    .status(str(p, "upload_id", 64));
  return {
    next_index: upload.next_index,
    received: upload.received,
    size: upload.size,
    done: upload.done,
  };
}

/** `attachment_upload_finish`. */
export async function attachmentUploadFinish(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const meta = await new Attachments(ctx.storage, ctx.caller.address)
    .finish(str(p, "upload_id", 64));
  return { attachment_id: meta.id, size: meta.size, sha256: meta.sha256 };
}

/** `attachment_get`. */
export async function attachmentGet(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  const mailbox = new Mailbox(ctx.storage, ctx.caller.address);
  const entry = await mailbox.message(str(p, "id", 64));
  const attachmentId = str(p, "attachment_id", 64);
  // Its attachments, and for email its source and HTML body.
  const email = entry?.value.email;
  const ref = [
    ...(entry?.value.attachments ?? []),
    ...(email ? [email.source, ...(email.html ? [email.html] : [])] : []),
  ].find((a) => a.id === attachmentId);
  if (!ref) {
    throw new ModuleError(
      "not_found",
      `no attachment ${attachmentId} in message ${p.id}`,
    );
  }
  const chunks = Math.max(1, Math.ceil(ref.size / CHUNK_SIZE));
  const index = optInt(p, "index", 0, chunks - 1) ?? 0;
  const data = ref.size === 0
    ? new Uint8Array()
    : await new Attachments(ctx.storage, ctx.caller.address).read(
      ref.blob ?? ref.id,
      index,
    );
  const { blob: _where, ...shown } = ref;
  return { ...shown, index, chunks, chunk_size: CHUNK_SIZE, data };
}
