/**
 * The server's side of `HPKE-X25519` login challenges, with Deno's native
 * `node:crypto` (synchronous X25519, HMAC and AES-GCM): the same RFC 9180
 * base-mode bytes as the portable library the client opens them with, at a
 * fraction of its cost (the portable library makes a dozen asynchronous Web
 * Crypto calls per challenge). Server only: browsers have no `node:crypto`.
 *
 * Suite: DHKEM(X25519, HKDF-SHA256) = 0x0020, HKDF-SHA256 = 0x0001,
 * AES-128-GCM = 0x0001; `info` is the login context (`context.ts`), a new one
 * for every challenge; output `enc || ciphertext`.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  createCipheriv,
  createHmac,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
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

function hmac(key: Uint8Array, data: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac("sha256", key).update(data).digest());
}

function labeledExtract(
  suite: Uint8Array,
  salt: Uint8Array,
  label: string,
  ikm: Uint8Array,
): Uint8Array {
  // HKDF-Extract with an empty salt is HMAC keyed with zeros: the same key.
  return hmac(salt, concatBytes(VERSION, suite, encoder.encode(label), ikm));
}

function labeledExpand(
  suite: Uint8Array,
  prk: Uint8Array,
  label: string,
  info: Uint8Array,
  length: number,
): Uint8Array {
  // One HMAC block suffices: every output here is at most 32 bytes.
  const labeled = concatBytes(
    new Uint8Array([length >> 8, length & 0xff]),
    VERSION,
    suite,
    encoder.encode(label),
    info,
  );
  return hmac(prk, concatBytes(labeled, new Uint8Array([1]))).subarray(
    0,
    length,
  );
}

/** Base mode and the (empty) PSK id hash: the start of every key schedule context. */
const SCHEDULE_PREFIX = concatBytes(
  new Uint8Array([0x00]),
  labeledExtract(HPKE_SUITE, new Uint8Array(), "psk_id_hash", new Uint8Array()),
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
  return { key, raw: spki.subarray(spki.length - 32) };
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
  const spki = new Uint8Array(
    ephemeral.publicKey.export({ format: "der", type: "spki" }),
  );
  const enc = spki.subarray(spki.length - 32);
  const dh = new Uint8Array(
    diffieHellman({
      privateKey: ephemeral.privateKey,
      publicKey: recipient.key,
    }),
  );
  const eaePrk = labeledExtract(KEM_SUITE, new Uint8Array(), "eae_prk", dh);
  const shared = labeledExpand(
    KEM_SUITE,
    eaePrk,
    "shared_secret",
    concatBytes(enc, recipient.raw),
    32,
  );
  const schedule = concatBytes(
    SCHEDULE_PREFIX,
    labeledExtract(HPKE_SUITE, new Uint8Array(), "info_hash", info),
  );
  const secret = labeledExtract(HPKE_SUITE, shared, "secret", new Uint8Array());
  const key = labeledExpand(HPKE_SUITE, secret, "key", schedule, 16);
  const nonce = labeledExpand(HPKE_SUITE, secret, "base_nonce", schedule, 12);
  const cipher = createCipheriv("aes-128-gcm", key, nonce);
  const body = concatBytes(
    new Uint8Array(cipher.update(plain)),
    new Uint8Array(cipher.final()),
    new Uint8Array(cipher.getAuthTag()),
  );
  return concatBytes(enc, body);
}
