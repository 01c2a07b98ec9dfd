import assert from "node:assert/strict";
import { concatBytes } from "./bytes.ts";

Deno.test("bytes: concatenation keeps order and length", () => {
  const out = concatBytes(
    new Uint8Array([1, 2]),
    new Uint8Array(),
    new Uint8Array([3]),
  );
  assert.deepEqual([...out], [1, 2, 3]);
  assert.equal(concatBytes().length, 0);
});
