/**
 * A bridge document over a Worker's `postMessage`, both ways: one
 * `Uint8Array` of its BSON in a buffer of exactly its size, copied by the
 * structured clone when small and moved (transferred) when large, and read
 * where it arrives without a further copy (the receiver owns it).
 *
 * @module
 */

import {
  decodeDocument,
  type Document,
  encodeDocument,
} from "../../core/wire/mod.ts";

/**
 * Documents of at least this many bytes are moved, smaller ones copied.
 * Measured in Deno 2.9 (docs/PERFORMANCE.md): moving a buffer costs about
 * 7 µs more per hop than copying a few hundred bytes; copying costs more from
 * about 16 KiB on.
 */
export const TRANSFER_FROM = 8 * 1024;

/** Post `doc` with `post` (a Worker's or a Worker scope's `postMessage`). */
export function postDocument(
  post: (data: Uint8Array, transfer: Transferable[]) => void,
  doc: Document,
): void {
  // An exact buffer of its own: BSON's output is a view into a shared 8 KiB
  // pool, which postMessage would copy or move whole.
  const bytes = new Uint8Array(encodeDocument(doc));
  post(bytes, bytes.byteLength < TRANSFER_FROM ? [] : [bytes.buffer]);
}

/**
 * The document of a message's data: read in place when it is bytes in a
 * buffer only this side holds (what postMessage moved or cloned); memory the
 * sender still shares (a SharedArrayBuffer) is copied first, so it cannot
 * change while it is checked and read. Anything but bytes is refused.
 *
 * @throws {TypeError} when the data is not bytes
 * @throws {MalformedDocumentError} (core/wire) when they are no document
 */
export function receivedDocument(data: unknown): Document {
  if (data instanceof ArrayBuffer) return decodeDocument(new Uint8Array(data));
  if (!(data instanceof Uint8Array)) {
    throw new TypeError("a message is not bytes");
  }
  return decodeDocument(
    data.buffer instanceof ArrayBuffer ? data : data.slice(),
  );
}
