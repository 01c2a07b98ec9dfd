/**
 * DKIM for mail this server sends as email (RFC 6376): every hosted domain
 * has its own keys, made the first time they are needed, one Ed25519 (RFC
 * 8463) and one RSA (2048 bits, for receivers that know no Ed25519), and each
 * message is signed with both. Rotated like the server key: `rotate` makes
 * new keys pending (publish their records beside the old ones), `activate`
 * signs with them from then on. Each key has a selector of its own, so old
 * and new records are published side by side.
 *
 * The keys stay in the core: the gateway that speaks to the internet never
 * holds them (a gateway taken over cannot carry them away).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { dkimSign } from "mailauth/lib/dkim/sign.js";
import {
  type DkimDomainRecord,
  type DkimKeyRecord,
  DkimStore,
} from "../../kv/dkim.ts";
import { toBase64 } from "../../shared/login/algorithms.ts";

/** Seconds a domain's keys are reused before they are read again (a rotation made offline). */
const CACHE_MS = 60_000;

/** A record to publish for a domain's key. */
export interface DkimRecord {
  /** `<selector>._domainkey.<domain>`. */
  name: string;
  /** The TXT value. */
  value: string;
  /** `active` (it signs) or `pending` (publish it before `activate`). */
  state: "active" | "pending";
}

async function generate(
  algorithm: "ed25519" | "rsa",
  now: Date,
): Promise<DkimKeyRecord> {
  const pair = algorithm === "ed25519"
    ? await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
      "sign",
      "verify",
    ]) as CryptoKeyPair
    : await crypto.subtle.generateKey(
      {
        name: "RSASSA-PKCS1-v1_5",
        hash: "SHA-256",
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
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", pub));
  const hex = Array.from(
    digest.slice(0, 4),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
  return {
    algorithm,
    selector: `amtp-${algorithm === "ed25519" ? "ed" : "rsa"}-${hex}`,
    private_pkcs8: toBase64(
      new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey)),
    ),
    public_key: toBase64(pub),
    created: now,
  };
}

/** The TXT value of a key's record. */
export function dkimValue(key: DkimKeyRecord): string {
  return `v=DKIM1; k=${key.algorithm}; p=${key.public_key}`;
}

function pem(key: DkimKeyRecord): string {
  const lines = key.private_pkcs8.match(/.{1,64}/g) ?? [];
  return `-----BEGIN PRIVATE KEY-----\n${
    lines.join("\n")
  }\n-----END PRIVATE KEY-----\n`;
}

/** The hosted domains' DKIM keys: made on first use, signing, rotation. */
export class DkimKeys {
  readonly #store: DkimStore;
  readonly #cache = new Map<
    string,
    { at: number; record: Promise<DkimDomainRecord> }
  >();

  /** Keys in `kv`. */
  constructor(kv: Deno.Kv) {
    this.#store = new DkimStore(kv);
  }

  /** A domain's keys, made (both algorithms) when it has none. */
  async keys(domain: string): Promise<DkimDomainRecord> {
    const name = domain.toLowerCase();
    const hit = this.#cache.get(name);
    if (hit && Date.now() - hit.at < CACHE_MS) return await hit.record;
    const record = this.#load(name);
    this.#cache.set(name, { at: Date.now(), record });
    record.catch(() => this.#cache.delete(name));
    return await record;
  }

  async #load(domain: string): Promise<DkimDomainRecord> {
    for (let attempt = 0; attempt < 5; attempt++) {
      const entry = await this.#store.get(domain);
      if (entry.value) return entry.value;
      const now = new Date();
      const made: DkimDomainRecord = {
        domain,
        active: [await generate("ed25519", now), await generate("rsa", now)],
        pending: [],
        retired: [],
      };
      // Another process may make them at the same moment: one wins.
      if (await this.#store.put(made, null)) return made;
    }
    throw new Error(`the DKIM keys of ${domain} could not be stored`);
  }

  /** The records to publish for a domain: its active keys, and pending ones. */
  async records(domain: string): Promise<DkimRecord[]> {
    const record = await this.keys(domain);
    const row = (state: "active" | "pending") => (key: DkimKeyRecord) => ({
      name: `${key.selector}._domainkey.${record.domain}`,
      value: dkimValue(key),
      state,
    });
    return [
      ...record.active.map(row("active")),
      ...record.pending.map(row("pending")),
    ];
  }

  /**
   * Sign a message for `domain` with each of its active keys; resolves to
   * the message with the `DKIM-Signature` headers in front.
   */
  async sign(domain: string, raw: Uint8Array): Promise<Uint8Array> {
    const record = await this.keys(domain);
    const signatures = record.active.map((key) => ({
      signingDomain: record.domain,
      selector: key.selector,
      privateKey: pem(key),
      algorithm: key.algorithm === "ed25519" ? "ed25519-sha256" : "rsa-sha256",
      canonicalization: "relaxed/relaxed",
    }));
    // Every signature is in `signatureData` (the first also at the top,
    // which the signer ignores when `signatureData` is given).
    const signed = await dkimSign(
      Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength),
      { ...signatures[0], signatureData: signatures },
    );
    if (signed.errors?.length) {
      throw new Error(
        `DKIM signing failed: ${signed.errors[0]?.err?.message ?? "unknown"}`,
      );
    }
    const head = new TextEncoder().encode(signed.signatures);
    const out = new Uint8Array(head.length + raw.length);
    out.set(head);
    out.set(raw, head.length);
    return out;
  }

  /** Start a rotation: new keys (both algorithms) pending beside the active ones; their records. */
  async rotate(domain: string): Promise<DkimRecord[]> {
    await this.#change(domain, async (record) => {
      const now = new Date();
      record.pending = [
        await generate("ed25519", now),
        await generate("rsa", now),
      ];
    });
    return (await this.records(domain)).filter((r) => r.state === "pending");
  }

  /** Sign with the pending keys from now on; the old ones are retired. */
  async activate(domain: string): Promise<void> {
    await this.#change(domain, (record) => {
      if (record.pending.length === 0) {
        throw new Error(`no pending DKIM keys for ${domain}: rotate first`);
      }
      record.retired.push(...record.active);
      record.active = record.pending;
      record.pending = [];
      return Promise.resolve();
    });
  }

  async #change(
    domain: string,
    change: (record: DkimDomainRecord) => Promise<void>,
  ): Promise<void> {
    const name = domain.toLowerCase();
    await this.keys(name);
    for (let attempt = 0; attempt < 5; attempt++) {
      const entry = await this.#store.get(name);
      if (!entry.value) continue;
      const record = structuredClone(entry.value);
      await change(record);
      if (await this.#store.put(record, entry.versionstamp)) {
        this.#cache.delete(name);
        return;
      }
    }
    throw new Error(`the DKIM keys of ${domain} changed meanwhile; try again`);
  }
}
