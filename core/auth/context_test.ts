/**
 * The worked examples of PROTOCOL.md §7.7, read from the document and
 * reproduced here, and the client's refusals.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createPrivateKey, createPublicKey } from "node:crypto";
import {
  decryptChallenge,
  encryptChallenge,
  generateLoginKeyPair,
  importLoginPrivateKey,
  keyId,
  signTranscript,
  toBase64,
} from "../../shared/login/algorithms.ts";
import {
  answerChallenge,
  ChallengeRefused,
  type LoginKey,
} from "../../shared/login/answer.ts";
import {
  loginContext,
  loginTranscript,
  normalizeServerName,
} from "../../shared/login/context.ts";
import { sealChallenge, sealKey } from "./seal.ts";
import { encryptSecret, serverKey, verifySignature } from "./server_crypto.ts";

const DOC = await Deno.readTextFile(
  new URL("../../docs/PROTOCOL.md", import.meta.url),
);
const EXAMPLES = DOC.slice(
  DOC.indexOf("### 7.7 Worked examples"),
  DOC.indexOf("\n## ", DOC.indexOf("### 7.7 Worked examples")),
);

/** The `n`th match's first group in the examples. */
function find(pattern: RegExp, n = 0): string {
  const all = [...EXAMPLES.matchAll(new RegExp(pattern, "gs"))];
  assert.ok(all[n], `PROTOCOL.md §7.7 has no ${pattern} #${n}`);
  return all[n][1];
}

/** The `n`th fenced block, every line ending in LF. */
function block(n: number): Uint8Array {
  return new TextEncoder().encode(`${find(/```\n(.*?)\n```/, n)}\n`);
}

const hex = (text: string) => new Uint8Array(Buffer.from(text, "hex"));
const toHex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex");
const NONCE = Uint8Array.from({ length: 32 }, (_, i) => i);
const CLIENT_NONCE = Uint8Array.from({ length: 32 }, (_, i) => 0xa0 + i);
const WHO = {
  kind: "user",
  account: "alice@example.org",
  server: "mail.example.org",
} as const;

/** PKCS#8 of a raw 32-byte private key (RFC 8410). */
function pkcs8(oid: "ed25519" | "x25519", raw: Uint8Array): Uint8Array {
  const prefix = oid === "ed25519"
    ? "302e020100300506032b657004220420"
    : "302e020100300506032b656e04220420";
  return new Uint8Array([...hex(prefix), ...raw]);
}

function spkiOf(der: Uint8Array): Uint8Array {
  return new Uint8Array(
    createPublicKey(
      createPrivateKey({ key: Buffer.from(der), format: "der", type: "pkcs8" }),
    ).export({ format: "der", type: "spki" }),
  );
}

Deno.test("login context: the Ed25519 example of PROTOCOL.md §7.7", async () => {
  const der = pkcs8("ed25519", hex(find(/seed\s+`([0-9a-f]{64})`/)));
  const spki = spkiOf(der);
  assert.equal(toHex(spki), find(/SPKI\s+is\s+`([0-9a-f]+)`/, 0));
  const id = await keyId(spki);
  assert.equal(id, find(/key id `([0-9a-f]{16})`/, 0));
  const context = loginContext({
    algorithm: "Ed25519",
    ...WHO,
    keyId: id,
    nonce: NONCE,
  });
  const transcript = loginTranscript(context, CLIENT_NONCE);
  assert.deepEqual(transcript, block(0));
  const loaded = await importLoginPrivateKey(der);
  assert.equal(loaded.algorithm, "Ed25519");
  const signature = await signTranscript(loaded.key, transcript);
  assert.equal(
    toHex(signature),
    find(
      /signature \(Ed25519 signatures are deterministic\):\s+`([0-9a-f]{128})`/,
    ),
  );
  // The server's native check agrees, and only for this transcript.
  const key = serverKey("Ed25519", spki);
  assert.ok(key.algorithm === "Ed25519");
  assert.ok(verifySignature(key.key, transcript, signature));
  const elsewhere = loginTranscript(
    loginContext({
      algorithm: "Ed25519",
      ...WHO,
      server: "evil.example",
      keyId: id,
      nonce: NONCE,
    }),
    CLIENT_NONCE,
  );
  assert.ok(!verifySignature(key.key, elsewhere, signature));
});

Deno.test("login context: the HPKE-X25519 example of PROTOCOL.md §7.7", async () => {
  const recipient = pkcs8(
    "x25519",
    hex(find(/A\.1\.1,\s+`([0-9a-f]{64})`/, 0)),
  );
  const ephemeral = pkcs8(
    "x25519",
    hex(find(/A\.1\.1,\s+`([0-9a-f]{64})`/, 1)),
  );
  const spki = spkiOf(recipient);
  assert.equal(toHex(spki), find(/SPKI\s+is\s+`([0-9a-f]+)`/, 1));
  const id = await keyId(spki);
  assert.equal(id, find(/key id `([0-9a-f]{16})`/, 1));
  const context = loginContext({
    algorithm: "HPKE-X25519",
    ...WHO,
    keyId: id,
    nonce: NONCE,
  });
  assert.deepEqual(context, block(1));
  const secret = find(/the string\s+`([A-Za-z0-9]{48})`/);
  const sealed = sealChallenge(
    sealKey(spki),
    new TextEncoder().encode(secret),
    {
      info: context,
      ephemeral: createPrivateKey({
        key: Buffer.from(ephemeral),
        format: "der",
        type: "pkcs8",
      }),
    },
  );
  const verification = find(/verification\s+string\s+`([A-Za-z0-9+/=]+)`/);
  assert.equal(toBase64(sealed), verification);
  // The portable library (a browser client) opens it, only under this context.
  const loaded = await importLoginPrivateKey(recipient);
  assert.equal(
    await decryptChallenge("HPKE-X25519", loaded.key, verification, context),
    secret,
  );
  await assert.rejects(
    decryptChallenge(
      "HPKE-X25519",
      loaded.key,
      verification,
      loginContext({
        algorithm: "HPKE-X25519",
        ...WHO,
        account: "bob@example.org",
        keyId: id,
        nonce: NONCE,
      }),
    ),
  );
});

Deno.test("login context: the RSA-OAEP-256 example of PROTOCOL.md §7.7", async () => {
  const id = find(/key id `([0-9a-f]{16})`/, 2);
  const context = loginContext({
    algorithm: "RSA-OAEP-256",
    ...WHO,
    keyId: id,
    nonce: NONCE,
  });
  assert.deepEqual(context, block(2));
  const pair = await generateLoginKeyPair("RSA-OAEP-256");
  const loaded = await importLoginPrivateKey(pair.privateKey);
  const key = serverKey("RSA-OAEP-256", pair.publicKey);
  assert.ok(key.algorithm === "RSA-OAEP-256");
  const verification = encryptSecret(key, "x".repeat(48), context);
  assert.equal(
    await decryptChallenge("RSA-OAEP-256", loaded.key, verification, context),
    "x".repeat(48),
  );
  await assert.rejects(
    decryptChallenge(
      "RSA-OAEP-256",
      loaded.key,
      verification,
      new TextEncoder().encode("another label"),
    ),
  );
});

Deno.test("login context: server names compare as the client's URL host gives them", () => {
  assert.equal(
    normalizeServerName(new URL("https://[::1]:4433/").hostname),
    "::1",
  );
  assert.equal(
    normalizeServerName(new URL("https://Mail.Example.ORG.:443/").hostname),
    "mail.example.org",
  );
  assert.equal(
    normalizeServerName(new URL("wss://127.1:1/").hostname),
    "127.0.0.1",
  );
  assert.throws(() =>
    loginContext({
      algorithm: "Ed25519",
      ...WHO,
      account: "a\nserver=evil",
      keyId: "0",
      nonce: NONCE,
    })
  );
});

async function hpkeClient(): Promise<
  LoginKey & { publicKey: CryptoKey; spki: Uint8Array }
> {
  const pair = await generateLoginKeyPair("HPKE-X25519");
  const loaded = await importLoginPrivateKey(pair.privateKey);
  return {
    algorithm: "HPKE-X25519",
    privateKey: loaded.key,
    keyId: await keyId(pair.publicKey),
    spki: pair.publicKey,
    publicKey: await crypto.subtle.importKey(
      "spki",
      new Uint8Array(pair.publicKey),
      { name: "X25519" },
      true,
      [],
    ),
  };
}

Deno.test("login answer: a decrypted text that is not a challenge is never returned", async () => {
  const key = await hpkeClient();
  const context = loginContext({
    algorithm: "HPKE-X25519",
    ...WHO,
    keyId: key.keyId,
    nonce: NONCE,
  });
  for (
    const hidden of [
      "the plaintext of someone else's secret message",
      "x".repeat(47),
      `${"x".repeat(47)}!`,
      "x".repeat(49),
    ]
  ) {
    await assert.rejects(
      answerChallenge(key, {
        algorithm: "HPKE-X25519",
        key_id: key.keyId,
        nonce: NONCE,
        verification_string: await encryptChallenge(
          "HPKE-X25519",
          key.publicKey,
          hidden,
          context,
        ),
      }, WHO),
      ChallengeRefused,
      hidden,
    );
  }
  // A real challenge is answered.
  const secret = "Ab1".repeat(16);
  assert.deepEqual(
    await answerChallenge(key, {
      algorithm: "HPKE-X25519",
      key_id: key.keyId,
      nonce: NONCE,
      verification_string: await encryptChallenge(
        "HPKE-X25519",
        key.publicKey,
        secret,
        context,
      ),
    }, WHO),
    { verification_string: secret },
  );
});

Deno.test("login answer: a challenge for another key, algorithm or nonce size is refused", async () => {
  const key = await hpkeClient();
  const base = { algorithm: "HPKE-X25519", key_id: key.keyId, nonce: NONCE };
  for (
    const bad of [
      { ...base, key_id: "0000000000000000" },
      { ...base, algorithm: "RSA-OAEP-256" },
      { ...base, algorithm: "Ed25519" },
      { ...base, nonce: new Uint8Array(8) },
      { ...base },
    ]
  ) {
    await assert.rejects(answerChallenge(key, bad, WHO), ChallengeRefused);
  }
});
