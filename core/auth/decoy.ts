/**
 * Decoy challenges: a login request for an account that does not exist, is
 * disabled, or for a key id the account does not hold, is answered like a
 * real one, so answers do not tell which accounts exist.
 *
 * - The key id is derived from the server's persistent login secret and the
 *   account: the same across requests, restarts and server processes.
 * - The algorithm is picked per account, deterministically, with the
 *   distribution of real accounts' first keys (RSA keys by modulus size,
 *   which the verification string's length shows; at most
 *   {@link MAX_RSA_SIZES} sizes): counted at start and again every
 *   {@link DecoyOptions.refreshMs} in the background.
 * - HPKE decoys are sealed to an X25519 key derived from the secret, RSA
 *   decoys to a persistent RSA key of the picked size (created once, kept in
 *   the core database); Ed25519 decoys are a nonce, like real ones.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHmac, createPrivateKey, createPublicKey } from "node:crypto";
import { type AccountStore, getOrCreate, keys } from "../../kv/mod.ts";
import type { LoginAlgorithm } from "../../shared/login/algorithms.ts";
import { type ServerKey, serverKey } from "./server_crypto.ts";

/** Options of {@link Decoys}. */
export interface DecoyOptions {
  /** The core database (persistent decoy keys). */
  kv: Deno.Kv;
  /** Accounts, whose first keys are counted. */
  accounts: AccountStore;
  /** The server's login secret. */
  secret: Uint8Array;
  /** Milliseconds a count is used before it is refreshed (default an hour). */
  refreshMs?: number;
  /** Clock in epoch milliseconds (tests). */
  now?: () => number;
}

/** A decoy: what to answer in place of a real key. */
export interface Decoy {
  /** The algorithm shown. */
  algorithm: LoginAlgorithm;
  /** The key id shown. */
  keyId: string;
  /** The key to encrypt to (decryption algorithms). */
  key?: ServerKey;
}

/** A class of keys as a login answer shows it: the algorithm, and the size of an RSA key. */
export type KeyClass = { algorithm: LoginAlgorithm; bits?: number };

/** A class's name: the algorithm, and `/bits` for RSA. */
export function className(c: KeyClass): string {
  return c.bits ? `${c.algorithm}/${c.bits}` : c.algorithm;
}

/** RSA sizes decoys imitate at most (each needs a decoy key of its own). */
export const MAX_RSA_SIZES = 8;

/**
 * Keep the {@link MAX_RSA_SIZES} most common RSA sizes; the counts of rarer
 * ones go to the nearest kept size (accounts could otherwise make the server
 * create a decoy key for every size from 2048 to 4096 bits).
 */
export function mergeRareRsaSizes(
  counts: Map<string, [KeyClass, number]>,
): void {
  const rsa = [...counts.values()].filter(([c]) => c.bits)
    .sort((a, b) => b[1] - a[1] || a[0].bits! - b[0].bits!);
  const kept = rsa.slice(0, MAX_RSA_SIZES);
  for (const [c, n] of rsa.slice(MAX_RSA_SIZES)) {
    const nearest = kept.reduce((best, k) =>
      Math.abs(k[0].bits! - c.bits!) < Math.abs(best[0].bits! - c.bits!)
        ? k
        : best
    );
    nearest[1] += n;
    counts.delete(className(c));
  }
}

/** PKCS#8 prefix of a raw X25519 private key (RFC 8410). */
const X25519_PKCS8 = Buffer.from("302e020100300506032b656e04220420", "hex");

/** Decoy answers for one server. */
export class Decoys {
  readonly #options: DecoyOptions;
  readonly #now: () => number;
  readonly #x25519: ServerKey;
  readonly #rsa = new Map<number, Promise<ServerKey>>();
  #counted?: Promise<{ classes: [KeyClass, number][]; total: number }>;
  #countedAt = 0;

  /** Create the decoys for a server secret. */
  constructor(options: DecoyOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    const raw = this.#mac("decoy-x25519-key");
    const spki = createPublicKey(
      createPrivateKey({
        key: Buffer.concat([X25519_PKCS8, raw]),
        format: "der",
        type: "pkcs8",
      }),
    ).export({ format: "der", type: "spki" });
    this.#x25519 = serverKey("HPKE-X25519", new Uint8Array(spki));
  }

  #mac(text: string): Uint8Array {
    return new Uint8Array(
      createHmac("sha256", this.#options.secret).update(text).digest(),
    );
  }

  /** The decoy for an account (and, when given, the key id asked for). */
  async decoy(
    kind: "admin" | "user",
    account: string,
    askedKeyId?: string,
  ): Promise<Decoy> {
    const name = `${kind}:${account}`;
    const keyId = askedKeyId ??
      Buffer.from(this.#mac(`decoy-key-id\n${name}`).subarray(0, 8))
        .toString("hex");
    const chosen = await this.#pick(name);
    if (chosen.algorithm === "Ed25519") return { algorithm: "Ed25519", keyId };
    if (chosen.algorithm === "HPKE-X25519") {
      return { algorithm: chosen.algorithm, keyId, key: this.#x25519 };
    }
    return {
      algorithm: chosen.algorithm,
      keyId,
      key: await this.#rsaKey(chosen.bits ?? 3072),
    };
  }

  /** Count the accounts' keys now (at start) rather than for the first decoy. */
  async count(): Promise<void> {
    await this.#distribution();
  }

  /** The account's class: a fixed point in [0, 1) against the cumulative distribution. */
  async #pick(name: string): Promise<KeyClass> {
    const { classes, total } = await this.#distribution();
    if (total === 0) return { algorithm: "Ed25519" };
    const mac = this.#mac(`decoy-algorithm\n${name}`);
    const point = mac.subarray(0, 6).reduce((n, b) => n * 256 + b, 0) /
      2 ** 48 * total;
    let sum = 0;
    for (const [c, count] of classes) {
      sum += count;
      if (point < sum) return c;
    }
    return classes[classes.length - 1][0];
  }

  #distribution(): Promise<{ classes: [KeyClass, number][]; total: number }> {
    const now = this.#now();
    const stale =
      now - this.#countedAt >= (this.#options.refreshMs ?? 3_600_000);
    if (!this.#counted || stale) {
      const previous = this.#counted;
      this.#countedAt = now;
      const next = this.#count();
      // Serve the previous count while a new one runs; keep it if counting fails.
      next.then((d) => {
        this.#counted = Promise.resolve(d);
      }, () => {
        this.#countedAt = 0;
      });
      if (!previous) this.#counted = next;
      return previous ?? next;
    }
    return this.#counted;
  }

  async #count(): Promise<{ classes: [KeyClass, number][]; total: number }> {
    const counts = new Map<string, [KeyClass, number]>();
    let total = 0;
    for await (const key of this.#options.accounts.firstKeys()) {
      let c: KeyClass = { algorithm: key.algorithm };
      if (key.algorithm === "RSA-OAEP-256") {
        try {
          const details = createPublicKey({
            key: Buffer.from(key.public_key),
            format: "der",
            type: "spki",
          }).asymmetricKeyDetails;
          c = { algorithm: key.algorithm, bits: details?.modulusLength };
        } catch {
          continue;
        }
      }
      const entry = counts.get(className(c)) ?? [c, 0];
      entry[1]++;
      counts.set(className(c), entry);
      total++;
    }
    mergeRareRsaSizes(counts);
    const classes = [...counts.entries()].sort(([a], [b]) =>
      a < b ? -1 : a > b ? 1 : 0
    ).map(([, entry]) => entry);
    // Have the RSA decoy keys ready before a decoy needs one.
    for (const [c] of classes) {
      if (c.bits) this.#rsaKey(c.bits).catch(() => {});
    }
    return { classes, total };
  }

  #rsaKey(bits: number): Promise<ServerKey> {
    let key = this.#rsa.get(bits);
    if (!key) {
      key = getOrCreate(
        this.#options.kv,
        keys.decoyKey("RSA-OAEP-256", bits),
        async () => {
          const pair = await crypto.subtle.generateKey(
            {
              name: "RSA-OAEP",
              hash: "SHA-256",
              modulusLength: bits,
              publicExponent: new Uint8Array([1, 0, 1]),
            },
            true,
            ["encrypt", "decrypt"],
          );
          // Only the public half is kept: nothing ever decrypts a decoy.
          return new Uint8Array(
            await crypto.subtle.exportKey("spki", pair.publicKey),
          );
        },
      ).then((spki) => serverKey("RSA-OAEP-256", spki));
      key.catch(() => this.#rsa.delete(bits));
      this.#rsa.set(bits, key);
    }
    return key;
  }
}
