/**
 * Installed module packages in the core's database: the author key an admin
 * trusts for each module (pinned, or trusted on first use), and what is known
 * of each installed version (its signer, its SHA-256, who installed it).
 *
 * @module
 */

import { keys } from "./records.ts";

/** The author key trusted for a module's packages. */
export interface ModuleAuthorRecord {
  /** Ed25519 public key, SPKI DER in base64. */
  public_key: string;
  /** Its id (16 hex digits). */
  key_id: string;
  /** `pinned` (an admin named it) or `first_use` (trusted on first use). */
  trust: "pinned" | "first_use";
  /** When it was first trusted (ISO time). */
  since: string;
}

/** An installed package of one module version. */
export interface ModulePackageRecord {
  /** The signer's key (SPKI base64), or null when installed unsigned. */
  public_key: string | null;
  /** The signer's key id, or null. */
  key_id: string | null;
  /** SHA-256 of the package as uploaded. */
  sha256: string;
  /** The admin who installed it. */
  by: string;
  /** When (ISO time). */
  installed: string;
}

/** Trusted author keys and installed packages. */
export class PackageStore {
  readonly #kv: Deno.Kv;

  /** Wrap an open KV. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /** The key trusted for a module, if any. */
  async author(module: string): Promise<ModuleAuthorRecord | null> {
    return (await this.#kv.get<ModuleAuthorRecord>(keys.moduleAuthor(module)))
      .value;
  }

  /** Every installed package, by `name version`. */
  async packages(): Promise<Map<string, ModulePackageRecord>> {
    const out = new Map<string, ModulePackageRecord>();
    for await (
      const entry of this.#kv.list<ModulePackageRecord>({
        prefix: keys.modulePackages(),
      })
    ) {
      out.set(`${String(entry.key[1])} ${String(entry.key[2])}`, entry.value);
    }
    return out;
  }

  /** Record an installed package, and (when given) the key now trusted for its module. */
  async installed(
    module: string,
    version: string,
    record: ModulePackageRecord,
    author?: ModuleAuthorRecord,
  ): Promise<void> {
    const op = this.#kv.atomic().set(
      keys.modulePackage(module, version),
      record,
    );
    if (author) op.set(keys.moduleAuthor(module), author);
    await op.commit();
  }
}
