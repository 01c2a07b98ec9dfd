import assert from "node:assert/strict";
import { encodeDocument } from "../../core/wire/mod.ts";
import { postDocument, receivedDocument, TRANSFER_FROM } from "./post.ts";

Deno.test("post: a small document is copied, a large one moved; each arrives whole", () => {
  for (const size of [10, TRANSFER_FROM]) {
    const doc = { t: "rpc", id: 1, method: "m", args: ["x".repeat(size)] };
    let posted: { data: Uint8Array; transfer: Transferable[] } | undefined;
    postDocument((data, transfer) => posted = { data, transfer }, doc);
    assert.ok(posted);
    // An exact buffer of its own, never BSON's shared pool.
    assert.equal(posted.data.byteOffset, 0);
    assert.equal(posted.data.byteLength, posted.data.buffer.byteLength);
    assert.deepEqual(
      posted.transfer,
      size < TRANSFER_FROM ? [] : [posted.data.buffer],
    );
    assert.deepEqual(receivedDocument(posted.data), doc);
  }
});

Deno.test("post: bytes in memory the sender still shares are read from a copy of their own; anything but bytes is refused", () => {
  const doc = { t: "ret", id: 3, value: { text: "hi" } };
  const bytes = new Uint8Array(encodeDocument(doc));
  const shared = new Uint8Array(new SharedArrayBuffer(bytes.byteLength));
  shared.set(bytes);
  assert.deepEqual(receivedDocument(shared), doc);
  assert.deepEqual(receivedDocument(bytes.slice().buffer), doc);
  // A SharedArrayBuffer itself, numbers, an object: not a message.
  for (
    const data of [
      shared.buffer,
      [...bytes],
      { 0: 5, length: 5 },
      "x",
      new Uint16Array(4),
    ]
  ) {
    assert.throws(() => receivedDocument(data), TypeError);
  }
});
