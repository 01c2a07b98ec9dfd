/**
 * The server's side of each login algorithm, with Deno's native and
 * synchronous `node:crypto`: the HPKE seal (`seal.ts`), RSA-OAEP with a label,
 * Ed25519 verification. Public keys are parsed once and kept in a bounded
 * cache. Server only: browsers have no `node:crypto`.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  constants,
  createPublicKey,
  type KeyObject,
  publicEncrypt,
  verify,
} from "node:crypto";
import type { LoginAlgorithm } from "../../shared/login/algorithms.ts";
import { sealChallenge, type SealKey, sealKey } from "./seal.ts";

/** A public login key parsed for the server. */
export type ServerKey =
  | { algorithm: "Ed25519"; key: KeyObject }
  | { algorithm: "HPKE-X25519"; seal: SealKey }
  | { algorithm: "RSA-OAEP-256"; key: KeyObject };

/** Base64 of bytes, natively (the portable `toBase64` spreads them into arguments). */
function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
    .toString("base64");
}

/** Parsed keys kept at most. */
const CACHE_MAX = 10_000;

/**
 * Parse a public key (SPKI DER) of an algorithm.
 *
 * @throws {TypeError} when the key is not of that algorithm
 */
export function serverKey(
  algorithm: LoginAlgorithm,
  spki: Uint8Array,
): ServerKey {
  if (algorithm === "HPKE-X25519") return { algorithm, seal: sealKey(spki) };
  const key = createPublicKey({
    key: Buffer.from(spki),
    format: "der",
    type: "spki",
  });
  const type = algorithm === "Ed25519" ? "ed25519" : "rsa";
  if (key.asymmetricKeyType !== type) {
    throw new TypeError(`not an ${algorithm} public key`);
  }
  return { algorithm, key } as ServerKey;
}

/** Keys parsed before, by algorithm and SPKI; the least recently used goes first. */
export class ServerKeyCache {
  readonly #keys = new Map<string, ServerKey>();

  /** The parsed key (parsed now when not cached). */
  get(algorithm: LoginAlgorithm, spki: Uint8Array): ServerKey {
    const id = `${algorithm}:${toBase64(spki)}`;
    let key = this.#keys.get(id);
    if (key) {
      // Last in the map's order: the most recently used.
      this.#keys.delete(id);
    } else {
      key = serverKey(algorithm, spki);
      if (this.#keys.size >= CACHE_MAX) {
        this.#keys.delete(this.#keys.keys().next().value!);
      }
    }
    this.#keys.set(id, key);
    return key;
  }
}

/** Encrypt a challenge's random string to a key, bound to `context`; base64. */
export function encryptSecret(
  key: Exclude<ServerKey, { algorithm: "Ed25519" }>,
  secret: string,
  context: Uint8Array,
): string {
  const plain = new TextEncoder().encode(secret);
  if (key.algorithm === "HPKE-X25519") {
    return toBase64(sealChallenge(key.seal, plain, { info: context }));
  }
  return toBase64(
    publicEncrypt({
      key: key.key,
      padding: constants.RSA_PKCS1_OAEP_PADDING,
      oaepHash: "sha256",
      oaepLabel: context,
    }, plain),
  );
}

/** Does `signature` verify `transcript` under an Ed25519 key? */
export function verifySignature(
  key: KeyObject,
  transcript: Uint8Array,
  signature: Uint8Array,
): boolean {
  if (signature.length !== 64) return false;
  try {
    return verify(null, transcript, key, signature);
  } catch {
    return false;
  }
}
