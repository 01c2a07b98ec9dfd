/**
 * The server's side of `HPKE-X25519` login challenges, with Deno's native
 * `node:crypto` (synchronous X25519, HKDF, HMAC and AES-GCM): the same RFC
 * 9180 base-mode bytes as the portable library the client opens them with,
 * at a fraction of its cost (the portable library makes a dozen asynchronous
 * Web Crypto calls per challenge). Server only: browsers have no
 * `node:crypto`.
 *
 * Suite: DHKEM(X25519, HKDF-SHA256) = 0x0020, HKDF-SHA256 = 0x0001,
 * AES-128-GCM = 0x0001; `info` is the login context (`context.ts`), a new one
 * for every challenge; output `enc || ciphertext`.
 *
 * Each `LabeledExpand(LabeledExtract(salt, label, ikm), label2, info2, L)`
 * pair of RFC 9180 is one native `hkdfSync` (HKDF is Extract then Expand):
 * the shared secret, the key and the base nonce; `info_hash` is one HMAC.
 * Four native calls instead of six HMACs, each with its own JavaScript
 * object; the constant parts of the labeled inputs are encoded once.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  createCipheriv,
  createHmac,
  createPublicKey,
  createSecretKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
} from "node:crypto";

import { concatBytes } from "../wire/bytes.ts";

const encoder = new TextEncoder();
const VERSION = encoder.encode("HPKE-v1");
const KEM_ID = new Uint8Array([0x00, 0x20]);
const KEM_SUITE = concatBytes(encoder.encode("KEM"), KEM_ID);
const HPKE_SUITE = concatBytes(
  encoder.encode("HPKE"),
  KEM_ID,
  new Uint8Array([0x00, 0x01, 0x00, 0x01]),
);
/** HKDF-Extract with an empty salt: HMAC keyed with zeros (RFC 5869 §2.2). */
const NO_SALT = new Uint8Array(32);

/** `"HPKE-v1" || suite || label`: the start of a LabeledExtract input. */
function extractLabel(suite: Uint8Array, label: string): Uint8Array {
  return concatBytes(VERSION, suite, encoder.encode(label));
}

/** `I2OSP(length, 2) || "HPKE-v1" || suite || label`: the start of a LabeledExpand info. */
function expandLabel(
  suite: Uint8Array,
  label: string,
  length: number,
): Uint8Array {
  return concatBytes(
    new Uint8Array([length >> 8, length & 0xff]),
    VERSION,
    suite,
    encoder.encode(label),
  );
}

/** HMAC-SHA256. */
function hmac(key: Uint8Array, data: Uint8Array): Uint8Array {
  return createHmac("sha256", key).update(data).digest();
}

/** `LabeledExpand(LabeledExtract(salt, ikm), info, length)`: one HKDF. */
function hkdf(
  salt: Uint8Array,
  ikm: Uint8Array | KeyObject,
  info: Uint8Array,
  length: number,
): Uint8Array {
  return new Uint8Array(hkdfSync("sha256", ikm, salt, info, length));
}

const EAE_PRK = extractLabel(KEM_SUITE, "eae_prk");
const SHARED_SECRET = expandLabel(KEM_SUITE, "shared_secret", 32);
const INFO_HASH = extractLabel(HPKE_SUITE, "info_hash");
/**
 * The input of `LabeledExtract(shared_secret, "secret", psk)` with the empty
 * PSK, as a key object made once (`hkdfSync` makes one of bytes each call).
 */
const SECRET = createSecretKey(extractLabel(HPKE_SUITE, "secret"));
const KEY = expandLabel(HPKE_SUITE, "key", 16);
const BASE_NONCE = expandLabel(HPKE_SUITE, "base_nonce", 12);

/** Base mode and the (empty) PSK id hash: the start of every key schedule context. */
const SCHEDULE_PREFIX = concatBytes(
  new Uint8Array([0x00]),
  hmac(NO_SALT, extractLabel(HPKE_SUITE, "psk_id_hash")),
);

/** A recipient's X25519 public key, ready for {@link sealChallenge}. */
export interface SealKey {
  /** The key object. */
  key: KeyObject;
  /** Its 32 raw bytes. */
  raw: Uint8Array;
}

/** Import an X25519 SubjectPublicKeyInfo (DER) for sealing. */
export function sealKey(spki: Uint8Array): SealKey {
  const key = createPublicKey({
    key: Buffer.from(spki),
    format: "der",
    type: "spki",
  });
  if (key.asymmetricKeyType !== "x25519") {
    throw new TypeError("not an X25519 public key");
  }
  return { key, raw: spki.slice(spki.length - 32) };
}

/** Options of {@link sealChallenge}. */
export interface SealOptions {
  /** HPKE `info`: the login context. */
  info: Uint8Array;
  /** The ephemeral X25519 private key; a fresh one when absent (test vectors fix it). */
  ephemeral?: KeyObject;
}

/** HPKE base-mode seal of `plain` to `recipient`: `enc || ciphertext`. */
export function sealChallenge(
  recipient: SealKey,
  plain: Uint8Array,
  options: SealOptions,
): Uint8Array {
  const { info } = options;
  const ephemeral = options.ephemeral
    ? {
      privateKey: options.ephemeral,
      publicKey: createPublicKey(options.ephemeral),
    }
    : generateKeyPairSync("x25519");
  const spki = ephemeral.publicKey.export({ format: "der", type: "spki" });
  // The output: enc (the ephemeral public key), then the ciphertext and tag.
  const out = new Uint8Array(32 + plain.length + 16);
  out.set(spki.subarray(spki.length - 32));
  const enc = out.subarray(0, 32);
  const dh = diffieHellman({
    privateKey: ephemeral.privateKey,
    publicKey: recipient.key,
  });
  const shared = hkdf(
    NO_SALT,
    concatBytes(EAE_PRK, dh),
    concatBytes(SHARED_SECRET, enc, recipient.raw),
    32,
  );
  const schedule = concatBytes(
    SCHEDULE_PREFIX,
    hmac(NO_SALT, concatBytes(INFO_HASH, info)),
  );
  const key = hkdf(shared, SECRET, concatBytes(KEY, schedule), 16);
  const nonce = hkdf(shared, SECRET, concatBytes(BASE_NONCE, schedule), 12);
  const cipher = createCipheriv("aes-128-gcm", key, nonce);
  let at = 32;
  for (const part of [cipher.update(plain), cipher.final()]) {
    out.set(part, at);
    at += part.length;
  }
  out.set(cipher.getAuthTag(), at);
  return out;
}
