/**
 * The DKIM keys of the hosted domains (RFC 6376): per domain, the keys that
 * sign (one Ed25519 and one RSA, RFC 8463), the ones published ahead of a
 * rotation, and the retired ones. Shared by the server and the offline tool
 * (a rotation made offline is seen by a running server within a minute).
 *
 * @module
 */

import { keys } from "./records.ts";

/** One DKIM key of a domain. */
export interface DkimKeyRecord {
  /** `ed25519` or `rsa`. */
  algorithm: "ed25519" | "rsa";
  /** Its selector: the record is `<selector>._domainkey.<domain>`. */
  selector: string;
  /** PKCS#8 of the private key, base64. */
  private_pkcs8: string;
  /** The public key as DNS publishes it, base64: raw 32 bytes (Ed25519), SPKI (RSA). */
  public_key: string;
  /** When it was made. */
  created: Date;
}

/** A domain's DKIM keys. */
export interface DkimDomainRecord {
  /** The domain. */
  domain: string;
  /** The keys that sign. */
  active: DkimKeyRecord[];
  /** Keys to publish before they sign (a rotation in progress). */
  pending: DkimKeyRecord[];
  /** Keys that signed before (their records may be removed). */
  retired: DkimKeyRecord[];
}

/** DKIM keys in KV. */
export class DkimStore {
  readonly #kv: Deno.Kv;

  /** Wrap an open KV. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /** A domain's keys, with what a replacement must check. */
  async get(domain: string): Promise<Deno.KvEntryMaybe<DkimDomainRecord>> {
    return await this.#kv.get<DkimDomainRecord>(keys.dkim(domain));
  }

  /** Write a domain's keys if they did not change since `versionstamp` (null: absent); false otherwise. */
  async put(
    record: DkimDomainRecord,
    versionstamp: string | null,
  ): Promise<boolean> {
    const key = keys.dkim(record.domain);
    const result = await this.#kv.atomic().check({ key, versionstamp }).set(
      key,
      record,
    ).commit();
    return result.ok;
  }
}
