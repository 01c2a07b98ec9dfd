import assert from "node:assert/strict";
import { BSON } from "bson";
import { concatBytes } from "./bytes.ts";
import { FrameDecoder, FrameError } from "./frame.ts";
import {
  decodeDocument,
  encodeDocument,
  MalformedDocumentError,
} from "./envelope.ts";

function frames(n: number): Uint8Array[] {
  return Array.from(
    { length: n },
    (_, i) =>
      new Uint8Array(
        BSON.serialize({
          command: "ping",
          requestID: i,
          pad: "x".repeat(i * 7),
        }),
      ),
  );
}

Deno.test("decoder: several frames coalesced in one chunk", () => {
  const input = frames(5);
  const out = new FrameDecoder(1 << 20).push(concatBytes(...input));
  assert.deepEqual(out, input);
});

Deno.test("decoder: frames split at every possible byte", () => {
  const input = frames(4);
  const bytes = concatBytes(...input);
  for (let size = 1; size <= 9; size++) {
    const decoder = new FrameDecoder(1 << 20);
    const out: Uint8Array[] = [];
    for (let i = 0; i < bytes.length; i += size) {
      out.push(...decoder.push(bytes.subarray(i, i + size)));
    }
    assert.deepEqual(out.map((f) => BSON.deserialize(f).requestID), [
      0,
      1,
      2,
      3,
    ]);
    assert.equal(decoder.buffered, 0);
  }
});

Deno.test("decoder: a truncated frame waits and yields nothing", () => {
  const [frame] = frames(1);
  const decoder = new FrameDecoder(1 << 20);
  assert.deepEqual(decoder.push(frame.subarray(0, frame.length - 1)), []);
  assert.equal(decoder.buffered, frame.length - 1);
  assert.deepEqual(decoder.push(frame.subarray(frame.length - 1)), [frame]);
});

Deno.test("decoder: an oversized length prefix is refused before buffering", () => {
  const decoder = new FrameDecoder(1024);
  const prefix = new Uint8Array([0xff, 0xff, 0xff, 0x7f]); // 2 GiB announced
  assert.throws(() => decoder.pushOrThrow(prefix), (error: unknown) => {
    assert.ok(error instanceof FrameError);
    assert.equal(error.code, "frame_too_large");
    assert.equal(error.announced, 0x7fffffff);
    return true;
  });
  assert.equal(decoder.buffered, 0);
  // The decoder stays failed: the stream cannot be resynchronised.
  assert.deepEqual(decoder.push(frames(1)[0]), []);
  assert.ok(decoder.error instanceof FrameError);
});

Deno.test("decoder: an oversized prefix split across chunks is refused too", () => {
  const decoder = new FrameDecoder(1024);
  assert.deepEqual(decoder.push(new Uint8Array([0x00, 0x10])), []);
  assert.throws(
    () => decoder.pushOrThrow(new Uint8Array([0x00, 0x00])),
    FrameError,
  );
});

Deno.test("decoder: a length below the BSON minimum is malformed", () => {
  const decoder = new FrameDecoder(1024);
  assert.throws(
    () => decoder.pushOrThrow(new Uint8Array([3, 0, 0, 0, 0])),
    (error: unknown) =>
      error instanceof FrameError && error.code === "frame_malformed",
  );
  const negative = new FrameDecoder(1024);
  assert.throws(
    () => negative.pushOrThrow(new Uint8Array([0, 0, 0, 0x80])),
    FrameError,
  );
});

Deno.test("envelope: garbage with a valid length is a malformed document", () => {
  const garbage = new Uint8Array([
    12,
    0,
    0,
    0,
    0x02,
    0x41,
    0,
    0xff,
    0xff,
    0xff,
    0x7f,
    0,
  ]);
  assert.throws(() => decodeDocument(garbage), MalformedDocumentError);
  const random = crypto.getRandomValues(new Uint8Array(64));
  random.set([64, 0, 0, 0]);
  assert.throws(() => decodeDocument(random), MalformedDocumentError);
});

Deno.test("envelope: binary values are copied out of the frame", () => {
  const frame = encodeDocument({
    a: new Uint8Array([1, 2, 3]),
    list: [new Uint8Array(2)],
  });
  const doc = decodeDocument(frame);
  const a = doc.a as Uint8Array;
  assert.deepEqual([...a], [1, 2, 3]);
  assert.equal(a.buffer.byteLength, 3);
  assert.equal((doc.list as Uint8Array[])[0].buffer.byteLength, 2);
});

Deno.test("decoder: frames before a bad length prefix in the same chunk are handed over", () => {
  const good = frames(3);
  const decoder = new FrameDecoder(1024);
  const out = decoder.push(
    concatBytes(...[...good, new Uint8Array([0xff, 0xff, 0xff, 0x7f])]),
  );
  assert.deepEqual(out, good);
  assert.equal(decoder.error?.code, "frame_too_large");
});
