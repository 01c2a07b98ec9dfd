/**
 * The public keys remote modules log in with (docs/PROTOCOL.md section
 * 12.9): each is registered by an admin for exactly one module name and
 * version, and serves that version only.
 *
 * @module
 */

import { keys } from "./records.ts";

/** A key a remote module of one version logs in with. */
export interface ModuleKeyRecord {
  /** Module name. */
  module: string;
  /** Module version. */
  version: string;
  /** Key id (shared/login/algorithms.ts keyId). */
  id: string;
  /** Always `Ed25519`. */
  algorithm: "Ed25519";
  /** SubjectPublicKeyInfo DER. */
  public_key: Uint8Array;
  /** The admin's name for it. */
  label: string;
  /** When it was added. */
  created: Date;
}

/** Keys one module version may hold. */
export const MAX_MODULE_KEYS = 16;

/** The registered keys of remote modules. */
export class ModuleKeyStore {
  readonly #kv: Deno.Kv;

  /** Wrap an open KV. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /** One key of a version, or undefined. */
  async get(
    module: string,
    version: string,
    id: string,
  ): Promise<ModuleKeyRecord | undefined> {
    return (await this.#kv.get<ModuleKeyRecord>(
      keys.moduleKey(module, version, id),
    )).value ?? undefined;
  }

  /** Every key (of one module when named), by module, version and id. */
  async list(module?: string): Promise<ModuleKeyRecord[]> {
    const out: ModuleKeyRecord[] = [];
    for await (
      const entry of this.#kv.list<ModuleKeyRecord>({
        prefix: keys.moduleKeys(module),
      })
    ) out.push(entry.value);
    return out;
  }

  /**
   * Add a key; false when the version already has it or holds
   * {@link MAX_MODULE_KEYS}.
   */
  async add(record: ModuleKeyRecord): Promise<"added" | "exists" | "full"> {
    const key = keys.moduleKey(record.module, record.version, record.id);
    const held = (await this.list(record.module)).filter((k) =>
      k.version === record.version
    );
    if (held.some((k) => k.id === record.id)) return "exists";
    if (held.length >= MAX_MODULE_KEYS) return "full";
    const ok = await this.#kv.atomic().check({ key, versionstamp: null }).set(
      key,
      record,
    ).commit();
    return ok.ok ? "added" : "exists";
  }

  /** Remove a key; false when there was none. */
  async delete(module: string, version: string, id: string): Promise<boolean> {
    const key = keys.moduleKey(module, version, id);
    if (!(await this.#kv.get(key)).versionstamp) return false;
    await this.#kv.delete(key);
    return true;
  }
}
