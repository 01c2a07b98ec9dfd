/**
 * Key files: PEM private keys (PKCS#8) and public keys (SPKI) for login.
 *
 * @module
 */

import {
  DEFAULT_LOGIN_ALGORITHM,
  generateLoginKeyPair,
  importLoginPrivateKey,
  importLoginPublicKey,
  keyId,
  LOGIN_ALGORITHMS,
  type LoginAlgorithm,
} from "./algorithms.ts";
import { fromPem, toPem } from "../pem.ts";

/** A private key loaded from a file. */
export interface PrivateKeyFile {
  /** Algorithm detected. */
  algorithm: LoginAlgorithm;
  /** The key, for signing or decryption. */
  privateKey: CryptoKey;
  /** The matching public key, SPKI DER. */
  publicKey: Uint8Array;
  /** Its key id. */
  keyId: string;
}

/** Load a PEM private key. */
export async function readPrivateKey(path: string): Promise<PrivateKeyFile> {
  const pem = await Deno.readTextFile(path);
  const loaded = await importLoginPrivateKey(fromPem(pem));
  return {
    algorithm: loaded.algorithm,
    privateKey: loaded.key,
    publicKey: loaded.publicKey,
    keyId: await keyId(loaded.publicKey),
  };
}

/** Load a PEM public key and detect its algorithm. */
export async function readPublicKey(
  path: string,
): Promise<{ algorithm: LoginAlgorithm; spki: Uint8Array; keyId: string }> {
  const text = await Deno.readTextFile(path);
  const spki = fromPem(text);
  for (const algorithm of LOGIN_ALGORITHMS) {
    try {
      await importLoginPublicKey(algorithm, spki);
      return { algorithm, spki, keyId: await keyId(spki) };
    } catch {
      // Try the next algorithm.
    }
  }
  throw new Error(
    `${path} holds no Ed25519, X25519 or RSA (2048-4096) public key`,
  );
}

/** Generate a key pair and write `<base>.key` (owner-only) and `<base>.pub`. */
export async function writeKeyPair(
  base: string,
  algorithm: LoginAlgorithm = DEFAULT_LOGIN_ALGORITHM,
): Promise<{ keyFile: string; pubFile: string; keyId: string }> {
  const pair = await generateLoginKeyPair(algorithm);
  const keyFile = `${base}.key`;
  const pubFile = `${base}.pub`;
  await Deno.writeTextFile(keyFile, toPem("PRIVATE KEY", pair.privateKey), {
    mode: 0o600,
  });
  await Deno.chmod(keyFile, 0o600).catch(() => {});
  await Deno.writeTextFile(pubFile, toPem("PUBLIC KEY", pair.publicKey));
  return { keyFile, pubFile, keyId: await keyId(pair.publicKey) };
}
