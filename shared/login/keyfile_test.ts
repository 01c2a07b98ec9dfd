/**
 * The key files of PROTOCOL.md §7.8, read from the document: they load, with
 * the algorithm and key id §7.7 gives for the same keys, and a written pair
 * reads back.
 */

import assert from "node:assert/strict";
import { readPrivateKey, readPublicKey, writeKeyPair } from "./keyfile.ts";

const DOC = await Deno.readTextFile(
  new URL("../../docs/PROTOCOL.md", import.meta.url),
);
const section = (heading: string) => {
  const start = DOC.indexOf(heading);
  assert.ok(start >= 0, `PROTOCOL.md has no ${heading}`);
  return DOC.slice(start, DOC.indexOf("\n### ", start + 1));
};
const FILES = section("### 7.8 Key files");
const EXAMPLES = section("### 7.7 Worked examples");
const PEMS = [...FILES.matchAll(/```\n(-----BEGIN [\s\S]*?-----)\n```/g)].map(
  (m) => `${m[1]}\n`,
);
const KEY_IDS = [...EXAMPLES.matchAll(/key id `([0-9a-f]{16})`/g)].map((m) =>
  m[1]
);

async function asFile(text: string): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".pem" });
  await Deno.writeTextFile(path, text);
  return path;
}

Deno.test("key files: the PEM files of PROTOCOL.md §7.8 load with the key ids of §7.7", async () => {
  assert.equal(PEMS.length, 3);
  const [edPrivate, edPublic, xPrivate] = await Promise.all(PEMS.map(asFile));
  try {
    const ed = await readPrivateKey(edPrivate);
    assert.equal(ed.algorithm, "Ed25519");
    assert.equal(ed.keyId, KEY_IDS[0]);
    const pub = await readPublicKey(edPublic);
    assert.equal(pub.algorithm, "Ed25519");
    assert.equal(pub.keyId, KEY_IDS[0]);
    const x = await readPrivateKey(xPrivate);
    assert.equal(x.algorithm, "HPKE-X25519");
    assert.equal(x.keyId, KEY_IDS[1]);
  } finally {
    for (const path of [edPrivate, edPublic, xPrivate]) await Deno.remove(path);
  }
});

Deno.test("key files: a written pair is PKCS#8 and SPKI PEM, the private one owner-only", async () => {
  const dir = await Deno.makeTempDir();
  try {
    for (const algorithm of ["Ed25519", "HPKE-X25519"] as const) {
      const out = await writeKeyPair(`${dir}/k-${algorithm}`, algorithm);
      const text = await Deno.readTextFile(out.keyFile);
      assert.match(
        text,
        /^-----BEGIN PRIVATE KEY-----\n[A-Za-z0-9+/=\n]+\n-----END PRIVATE KEY-----\n$/,
      );
      assert.match(
        await Deno.readTextFile(out.pubFile),
        /^-----BEGIN PUBLIC KEY-----\n/,
      );
      assert.equal((await Deno.stat(out.keyFile)).mode! & 0o077, 0);
      assert.equal((await readPrivateKey(out.keyFile)).keyId, out.keyId);
      assert.equal((await readPublicKey(out.pubFile)).keyId, out.keyId);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
