import assert from "node:assert/strict";
import { decryptChallenge, toBase64 } from "../../shared/login/algorithms.ts";
import { sealChallenge, sealKey } from "./seal.ts";

Deno.test("seal: the native HPKE seal opens with the portable HPKE library (RFC 9180 bytes), only under its info", async () => {
  const pair = await crypto.subtle.generateKey({ name: "X25519" }, true, [
    "deriveBits",
  ]) as CryptoKeyPair;
  const spki = new Uint8Array(
    await crypto.subtle.exportKey("spki", pair.publicKey),
  );
  const recipient = sealKey(spki);
  const seen = new Set<string>();
  for (let i = 0; i < 20; i++) {
    const text = `challenge ${i} ${crypto.randomUUID()}`;
    const info = new TextEncoder().encode(`context ${i}`);
    const sealed = sealChallenge(recipient, new TextEncoder().encode(text), {
      info,
    });
    assert.equal(sealed.length, 32 + text.length + 16);
    seen.add(toBase64(sealed.subarray(0, 32)));
    assert.equal(
      await decryptChallenge(
        "HPKE-X25519",
        pair.privateKey,
        toBase64(sealed),
        info,
      ),
      text,
    );
    // Another info (another server, account or nonce) does not open it.
    await assert.rejects(() =>
      decryptChallenge(
        "HPKE-X25519",
        pair.privateKey,
        toBase64(sealed),
        new TextEncoder().encode(`context ${i + 1}`),
      )
    );
  }
  assert.equal(seen.size, 20, "a fresh ephemeral key every time");
  // A flipped bit does not open.
  const info = new TextEncoder().encode("x");
  const sealed = sealChallenge(recipient, new TextEncoder().encode("x"), {
    info,
  });
  sealed[40] ^= 1;
  await assert.rejects(() =>
    decryptChallenge("HPKE-X25519", pair.privateKey, toBase64(sealed), info)
  );
  // Not an X25519 key.
  const ec = await crypto.subtle.generateKey(
    { name: "ECDSA", namedCurve: "P-256" },
    true,
    ["sign"],
  ) as CryptoKeyPair;
  const ecSpki = new Uint8Array(
    await crypto.subtle.exportKey("spki", ec.publicKey),
  );
  assert.throws(() => sealKey(ecSpki));
});
