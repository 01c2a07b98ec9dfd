/**
 * The server's signing key for federation, kept in the data folder
 * (`server_key.json`, owner-only) and published through `amtp-dkim`.
 *
 * Rotation keeps an overlap: `rotate` makes a new key *pending* (publish its
 * record next to the old one), `activate` signs with it from then on (the old
 * record may stay published until every peer's cache has moved on). Peers
 * accept a signature by any key the host publishes.
 *
 * @module
 */

import { toBase64 } from "../../shared/login/algorithms.ts";
import type { DkimKey } from "./dns.ts";

interface StoredKey {
  algorithm: "ed25519" | "rsa";
  private_pkcs8: string;
  public_key: string;
  created: string;
}

interface StoredKeys {
  active: StoredKey;
  pending?: StoredKey;
  retired: StoredKey[];
}

const ED = { name: "Ed25519" } as const;
const RSA = { name: "RSASSA-PKCS1-v1_5", hash: "SHA-256" } as const;

function buf(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes) as Uint8Array<ArrayBuffer>;
}

function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

async function generate(algorithm: "ed25519" | "rsa"): Promise<StoredKey> {
  const pair = algorithm === "ed25519"
    ? await crypto.subtle.generateKey(ED, true, [
      "sign",
      "verify",
    ]) as CryptoKeyPair
    : await crypto.subtle.generateKey(
      {
        ...RSA,
        modulusLength: 2048,
        publicExponent: new Uint8Array([1, 0, 1]),
      },
      true,
      ["sign", "verify"],
    );
  const pub = new Uint8Array(
    await crypto.subtle.exportKey(
      algorithm === "ed25519" ? "raw" : "spki",
      pair.publicKey,
    ),
  );
  return {
    algorithm,
    private_pkcs8: toBase64(
      new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey)),
    ),
    public_key: toBase64(pub),
    created: new Date().toISOString(),
  };
}

/** The `amtp-dkim` TXT value of a key. */
function record(key: StoredKey): string {
  return `v=DKIM1;h=sha256;k=${key.algorithm};p=${key.public_key}`;
}

/** Smallest RSA modulus accepted from another server, in bits. */
export const MIN_RSA_BITS = 2048;

/** Why a published key must not be used (an RSA key under {@link MIN_RSA_BITS} bits, or unreadable), or undefined. */
export async function keyWeakness(key: DkimKey): Promise<string | undefined> {
  if (key.algorithm === "ed25519") {
    return key.key.length === 32 ? undefined : "an Ed25519 key is 32 bytes";
  }
  try {
    const imported = await crypto.subtle.importKey(
      "spki",
      buf(key.key),
      RSA,
      true,
      ["verify"],
    );
    const bits = (imported.algorithm as RsaHashedKeyAlgorithm).modulusLength;
    return bits < MIN_RSA_BITS
      ? `an RSA key of ${bits} bits is too weak (at least ${MIN_RSA_BITS})`
      : undefined;
  } catch {
    return "an RSA key that is not a valid SubjectPublicKeyInfo";
  }
}

/** A key as policies list it: `ed25519:<base64 raw>` or `rsa:<base64 SPKI>`. */
export function keyText(key: DkimKey): string {
  return `${key.algorithm}:${toBase64(key.key)}`;
}

/** Verify `signature` over `data` with a published key. */
export async function verifyWith(
  key: DkimKey,
  data: Uint8Array,
  signature: Uint8Array,
): Promise<boolean> {
  try {
    const publicKey = key.algorithm === "ed25519"
      ? await crypto.subtle.importKey("raw", buf(key.key), ED, false, [
        "verify",
      ])
      : await crypto.subtle.importKey("spki", buf(key.key), RSA, false, [
        "verify",
      ]);
    return await crypto.subtle.verify(
      key.algorithm === "ed25519" ? ED : RSA,
      publicKey,
      buf(signature),
      buf(data),
    );
  } catch {
    return false;
  }
}

/** The server's keys. */
export class ServerKeys {
  readonly #path: string;
  #stored: StoredKeys;
  #signer?: Promise<CryptoKey>;

  private constructor(path: string, stored: StoredKeys) {
    this.#path = path;
    this.#stored = stored;
  }

  /** Load the keys from the data folder, creating a first key (Ed25519 by default). */
  static async open(
    dataDir: string,
    algorithm: "ed25519" | "rsa" = "ed25519",
  ): Promise<ServerKeys> {
    const path = `${dataDir}/server_key.json`;
    try {
      return new ServerKeys(
        path,
        JSON.parse(await Deno.readTextFile(path)) as StoredKeys,
      );
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    const keys = new ServerKeys(path, {
      active: await generate(algorithm),
      retired: [],
    });
    await Deno.mkdir(dataDir, { recursive: true });
    await keys.#save();
    return keys;
  }

  async #save(): Promise<void> {
    await Deno.writeTextFile(
      this.#path,
      JSON.stringify(this.#stored, null, 2),
      { mode: 0o600 },
    );
    await Deno.chmod(this.#path, 0o600).catch(() => {});
  }

  /** Sign with the active key. */
  async sign(data: Uint8Array): Promise<Uint8Array> {
    const active = this.#stored.active;
    this.#signer ??= crypto.subtle.importKey(
      "pkcs8",
      buf(fromBase64(active.private_pkcs8)),
      active.algorithm === "ed25519" ? ED : RSA,
      false,
      ["sign"],
    );
    const key = await this.#signer;
    return new Uint8Array(
      await crypto.subtle.sign(
        active.algorithm === "ed25519" ? ED : RSA,
        key,
        buf(data),
      ),
    );
  }

  /** The public keys to publish: the active key, and a pending one during rotation. */
  publicKeys(): DkimKey[] {
    return [this.#stored.active, this.#stored.pending]
      .filter((k): k is StoredKey => k !== undefined)
      .map((k) => ({ algorithm: k.algorithm, key: fromBase64(k.public_key) }));
  }

  /** The `amtp-dkim=` values to publish: the active key, and a pending one during rotation. */
  records(): string[] {
    const out = [record(this.#stored.active)];
    if (this.#stored.pending) out.push(record(this.#stored.pending));
    return out;
  }

  /** Start a rotation: a new pending key to publish beside the active one. */
  async rotate(
    algorithm: "ed25519" | "rsa" = this.#stored.active.algorithm,
  ): Promise<string> {
    this.#stored.pending = await generate(algorithm);
    await this.#save();
    return record(this.#stored.pending);
  }

  /** Sign with the pending key from now on; the old key is kept as retired. */
  async activate(): Promise<void> {
    if (!this.#stored.pending) throw new Error("no pending key: rotate first");
    this.#stored.retired.push(this.#stored.active);
    this.#stored.active = this.#stored.pending;
    this.#stored.pending = undefined;
    this.#signer = undefined;
    await this.#save();
  }
}
