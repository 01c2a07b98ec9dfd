/**
 * Failed-login counters per account and per client IP, shared by every server
 * process through KV.
 *
 * @module
 */

import { type FailureRecord, keys } from "./records.ts";

/** Failed-login storage. */
export class FailureStore {
  readonly #kv: Deno.Kv;

  /** Wrap an open KV. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /** The record of one account or IP. */
  async get(
    scope: "account" | "ip",
    id: string,
  ): Promise<FailureRecord | null> {
    return (await this.#kv.get<FailureRecord>(keys.failure(scope, id))).value;
  }

  /** Several records in one read (at most 10). */
  async getMany(
    which: ["account" | "ip", string][],
  ): Promise<(FailureRecord | null)[]> {
    const entries = await this.#kv.getMany<FailureRecord[]>(
      which.map(([scope, id]) => keys.failure(scope, id)),
    );
    return entries.map((e) => e.value);
  }

  /** Store a record; it is forgotten a day after the block ends. */
  async put(record: FailureRecord): Promise<void> {
    const expireIn = Math.max(0, record.blocked_until - Date.now()) +
      86_400_000;
    await this.#kv.set(keys.failure(record.scope, record.id), record, {
      expireIn,
    });
  }

  /** Forget one record (a successful login, or an admin lifting a block). */
  async delete(scope: "account" | "ip", id: string): Promise<boolean> {
    const key = keys.failure(scope, id);
    const had = (await this.#kv.get(key)).value !== null;
    // Only a record that exists costs a commit (every successful login asks).
    if (had) await this.#kv.delete(key);
    return had;
  }

  /** Every record (for the admin list of blocks). */
  async list(): Promise<FailureRecord[]> {
    const out: FailureRecord[] = [];
    for await (
      const entry of this.#kv.list<FailureRecord>({ prefix: keys.failures() })
    ) out.push(entry.value);
    return out;
  }
}
