import assert from "node:assert/strict";
import { TokenBucket } from "./token_bucket.ts";

Deno.test("token bucket: a burst, then the rate", () => {
  let now = 0;
  const bucket = new TokenBucket(10, 3, () => now);
  assert.deepEqual([1, 2, 3, 4].map(() => bucket.take()), [
    true,
    true,
    true,
    false,
  ]);
  now = 100; // one token back
  assert.equal(bucket.take(), true);
  assert.equal(bucket.take(), false);
  now = 10_000; // never more than the burst
  assert.equal(bucket.take(3), true);
  assert.equal(bucket.take(), false);
  assert.equal(bucket.take(2), false);
});
