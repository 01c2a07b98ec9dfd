/**
 * Login key algorithms (PROTOCOL.md §7.1). The holder of an account's private
 * key proves it in one of two ways:
 *
 * - `Ed25519` (default for new keys): the client signs a transcript naming
 *   the server, the account and both sides' nonces (RFC 8032).
 * - `HPKE-X25519` and `RSA-OAEP-256`: the server encrypts a random string of
 *   48 characters to the key, bound to the same context (HPKE `info`, OAEP
 *   `label`); the client decrypts it and sends it back.
 *
 *   `HPKE-X25519`: RFC 9180 base mode, DHKEM(X25519, HKDF-SHA256),
 *   HKDF-SHA256, AES-128-GCM; the verification string is
 *   base64(enc || ciphertext). `RSA-OAEP-256`: RSA-OAEP with SHA-256 and
 *   MGF1-SHA-256, 2048 to 4096 bits; the verification string is
 *   base64(ciphertext).
 *
 * Public keys travel as SubjectPublicKeyInfo DER, private keys stay PKCS#8 on
 * the client. Only Web Crypto and a portable HPKE library are used, so the
 * client library runs this in browsers too (the server's side is native:
 * `server_crypto.ts`).
 *
 * @module
 */

import {
  Aes128Gcm,
  CipherSuite,
  DhkemX25519HkdfSha256,
  HkdfSha256,
} from "@hpke/core";

/** Supported algorithms, preferred first. */
export const LOGIN_ALGORITHMS = [
  "Ed25519",
  "HPKE-X25519",
  "RSA-OAEP-256",
] as const;

/** A supported login algorithm. */
export type LoginAlgorithm = typeof LOGIN_ALGORITHMS[number];

/** The algorithm of a new key when none is asked for. */
export const DEFAULT_LOGIN_ALGORITHM: LoginAlgorithm = "Ed25519";

/** A key that cannot be used: unparsable, wrong type or too weak. */
export class KeyError extends Error {
  /** `unsupported_algorithm` or `invalid_key`. */
  readonly code: "unsupported_algorithm" | "invalid_key";

  /** Create the error. */
  constructor(code: "unsupported_algorithm" | "invalid_key", message: string) {
    super(message);
    this.name = "KeyError";
    this.code = code;
  }
}

const RSA = { name: "RSA-OAEP", hash: "SHA-256" } as const;

let suite: CipherSuite | undefined;
function hpke(): CipherSuite {
  suite ??= new CipherSuite({
    kem: new DhkemX25519HkdfSha256(),
    kdf: new HkdfSha256(),
    aead: new Aes128Gcm(),
  });
  return suite;
}

/** Is `name` a supported algorithm? */
export function isLoginAlgorithm(name: string): name is LoginAlgorithm {
  return (LOGIN_ALGORITHMS as readonly string[]).includes(name);
}

function buf(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes) as Uint8Array<ArrayBuffer>;
}

/** Base64 of bytes. */
export function toBase64(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

/** Bytes of base64. */
export function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/**
 * Import and check a public key (SPKI DER) for an algorithm.
 *
 * @throws {KeyError}
 */
export async function importLoginPublicKey(
  algorithm: string,
  spki: Uint8Array,
): Promise<CryptoKey> {
  if (!isLoginAlgorithm(algorithm)) {
    throw new KeyError(
      "unsupported_algorithm",
      `algorithm "${algorithm}" is not supported (supported: ${
        LOGIN_ALGORITHMS.join(", ")
      })`,
    );
  }
  try {
    if (algorithm === "Ed25519") {
      return await crypto.subtle.importKey(
        "spki",
        buf(spki),
        { name: "Ed25519" },
        true,
        ["verify"],
      );
    }
    if (algorithm === "HPKE-X25519") {
      return await crypto.subtle.importKey(
        "spki",
        buf(spki),
        { name: "X25519" },
        true,
        [],
      );
    }
    const key = await crypto.subtle.importKey("spki", buf(spki), RSA, true, [
      "encrypt",
    ]);
    const bits = (key.algorithm as RsaHashedKeyAlgorithm).modulusLength;
    if (bits < 2048 || bits > 4096) {
      throw new KeyError(
        "invalid_key",
        `RSA keys must have 2048 to 4096 bits, this one has ${bits}`,
      );
    }
    return key;
  } catch (error) {
    if (error instanceof KeyError) throw error;
    throw new KeyError(
      "invalid_key",
      `the public key is not a valid ${algorithm} SubjectPublicKeyInfo`,
    );
  }
}

/**
 * Encrypt a challenge string for the holder of `publicKey`, bound to
 * `context` (HPKE info, OAEP label); returns base64. Portable (tests and
 * other implementations); the server uses `server_crypto.ts`.
 */
export async function encryptChallenge(
  algorithm: "HPKE-X25519" | "RSA-OAEP-256",
  publicKey: CryptoKey,
  text: string,
  context: Uint8Array,
): Promise<string> {
  const plain = new TextEncoder().encode(text);
  if (algorithm === "RSA-OAEP-256") {
    return toBase64(
      new Uint8Array(
        await crypto.subtle.encrypt(
          { name: "RSA-OAEP", label: buf(context) },
          publicKey,
          plain,
        ),
      ),
    );
  }
  const sender = await hpke().createSenderContext({
    recipientPublicKey: publicKey,
    info: buf(context),
  });
  const sealed = new Uint8Array(await sender.seal(plain));
  const enc = new Uint8Array(sender.enc);
  const out = new Uint8Array(enc.length + sealed.length);
  out.set(enc);
  out.set(sealed, enc.length);
  return toBase64(out);
}

/**
 * Decrypt a verification string with the private key (the client's side);
 * fails unless it was encrypted for exactly this `context`.
 */
export async function decryptChallenge(
  algorithm: "HPKE-X25519" | "RSA-OAEP-256",
  privateKey: CryptoKey | CryptoKeyPair,
  verification: string,
  context: Uint8Array,
): Promise<string> {
  const bytes = fromBase64(verification);
  if (algorithm === "RSA-OAEP-256") {
    return new TextDecoder("utf-8", { fatal: true }).decode(
      await crypto.subtle.decrypt(
        { name: "RSA-OAEP", label: buf(context) },
        "privateKey" in privateKey ? privateKey.privateKey : privateKey,
        buf(bytes),
      ),
    );
  }
  if (bytes.length < 32 + 16) throw new Error("verification string too short");
  const recipient = await hpke().createRecipientContext({
    recipientKey: privateKey,
    enc: buf(bytes.subarray(0, 32)),
    info: buf(context),
  });
  return new TextDecoder("utf-8", { fatal: true }).decode(
    await recipient.open(buf(bytes.subarray(32))),
  );
}

/** Sign a login transcript with an Ed25519 private key (the client's side). */
export async function signTranscript(
  privateKey: CryptoKey,
  transcript: Uint8Array,
): Promise<Uint8Array> {
  return new Uint8Array(
    await crypto.subtle.sign("Ed25519", privateKey, buf(transcript)),
  );
}

/** A key's id: the first 16 hex digits of SHA-256 over its SPKI. */
export async function keyId(spki: Uint8Array): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", buf(spki)),
  );
  return Array.from(
    digest.subarray(0, 8),
    (b) => b.toString(16).padStart(2, "0"),
  )
    .join("");
}

/** A new key pair for login, exported. */
export interface LoginKeyPair {
  /** Algorithm. */
  algorithm: LoginAlgorithm;
  /** SubjectPublicKeyInfo DER. */
  publicKey: Uint8Array;
  /** PKCS#8 DER. */
  privateKey: Uint8Array;
}

/** Generate a login key pair (RSA: 3072 bits). */
export async function generateLoginKeyPair(
  algorithm: LoginAlgorithm = DEFAULT_LOGIN_ALGORITHM,
): Promise<LoginKeyPair> {
  const pair = algorithm === "Ed25519"
    ? await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
      "sign",
      "verify",
    ]) as CryptoKeyPair
    : algorithm === "HPKE-X25519"
    ? await crypto.subtle.generateKey({ name: "X25519" }, true, [
      "deriveBits",
    ]) as CryptoKeyPair
    : await crypto.subtle.generateKey(
      {
        ...RSA,
        modulusLength: 3072,
        publicExponent: new Uint8Array([1, 0, 1]),
      },
      true,
      ["encrypt", "decrypt"],
    );
  return {
    algorithm,
    publicKey: new Uint8Array(
      await crypto.subtle.exportKey("spki", pair.publicKey),
    ),
    privateKey: new Uint8Array(
      await crypto.subtle.exportKey("pkcs8", pair.privateKey),
    ),
  };
}

/** The public key (SPKI) of an OKP private key, through its JWK. */
async function okpPublicKey(
  key: CryptoKey,
  name: "Ed25519" | "X25519",
): Promise<Uint8Array> {
  const jwk = await crypto.subtle.exportKey("jwk", key);
  const pub = await crypto.subtle.importKey(
    "jwk",
    { kty: jwk.kty, crv: jwk.crv, x: jwk.x },
    { name },
    true,
    name === "Ed25519" ? ["verify"] : [],
  );
  return new Uint8Array(await crypto.subtle.exportKey("spki", pub));
}

/**
 * Import a private key (PKCS#8 DER), detecting its algorithm.
 *
 * @throws {KeyError} when it is neither Ed25519, X25519 nor RSA
 */
export async function importLoginPrivateKey(
  pkcs8: Uint8Array,
): Promise<
  { algorithm: LoginAlgorithm; key: CryptoKey; publicKey: Uint8Array }
> {
  for (
    const [algorithm, name, usages] of [
      ["Ed25519", "Ed25519", ["sign"]],
      ["HPKE-X25519", "X25519", ["deriveBits"]],
    ] as const
  ) {
    let key: CryptoKey;
    try {
      key = await crypto.subtle.importKey(
        "pkcs8",
        buf(pkcs8),
        { name },
        true,
        [...usages],
      );
    } catch {
      continue; // Not this algorithm: try the next.
    }
    return { algorithm, key, publicKey: await okpPublicKey(key, name) };
  }
  try {
    const key = await crypto.subtle.importKey("pkcs8", buf(pkcs8), RSA, true, [
      "decrypt",
    ]);
    const jwk = await crypto.subtle.exportKey("jwk", key);
    const pub = await crypto.subtle.importKey(
      "jwk",
      { kty: jwk.kty, n: jwk.n, e: jwk.e, alg: "RSA-OAEP-256" },
      RSA,
      true,
      ["encrypt"],
    );
    return {
      algorithm: "RSA-OAEP-256",
      key,
      publicKey: new Uint8Array(await crypto.subtle.exportKey("spki", pub)),
    };
  } catch {
    throw new KeyError(
      "invalid_key",
      "the private key is neither an Ed25519, an X25519 nor an RSA PKCS#8 key",
    );
  }
}
