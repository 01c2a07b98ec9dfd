import assert from "node:assert/strict";
import { ServerKeyCache } from "./server_crypto.ts";

/** SubjectPublicKeyInfo (DER) of X25519 around 32 raw bytes (any 32 bytes are a key). */
const X25519_SPKI = [
  0x30,
  0x2a,
  0x30,
  0x05,
  0x06,
  0x03,
  0x2b,
  0x65,
  0x6e,
  0x03,
  0x21,
  0x00,
];
function spki(n: number): Uint8Array {
  const raw = new Uint8Array(32);
  new DataView(raw.buffer).setUint32(0, n);
  return new Uint8Array([...X25519_SPKI, ...raw]);
}

Deno.test("server keys: the cache keeps the keys in use and drops the least recently used", () => {
  const cache = new ServerKeyCache();
  const get = (n: number) => cache.get("HPKE-X25519", spki(n));
  const hot = get(0);
  const cold = get(1);
  const two = get(2);
  // Fill to the bound (10,000 keys), using the hot key now and then.
  for (let i = 3; i < 10_000; i++) {
    get(i);
    if (i % 1000 === 0) assert.equal(get(0), hot, "parsed once");
  }
  assert.equal(get(1), cold, "still cached at the bound");
  // One more: the least recently used goes (key 2), not the first parsed (0).
  get(10_000);
  assert.equal(get(0), hot);
  assert.equal(get(1), cold);
  assert.notEqual(get(2), two, "key 2 was dropped and parsed again");
});
