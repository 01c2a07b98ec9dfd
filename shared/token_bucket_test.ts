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

Deno.test("token bucket: borrow paces a flow of bytes to the rate", () => {
  let now = 0;
  // 1,000 bytes a second, a burst of 500.
  const bucket = new TokenBucket(1000, 500, () => now);
  assert.equal(bucket.borrow(400), 0);
  // 100 left: 300 more is a debt of 200, paid in 200 ms.
  assert.equal(bucket.borrow(300), 200);
  now += 200;
  // Paid; the next 100 waits 100 ms.
  assert.equal(bucket.borrow(100), 100);
  now += 10_000;
  // Never more than the burst saved up.
  assert.equal(bucket.borrow(600), 100);
});
