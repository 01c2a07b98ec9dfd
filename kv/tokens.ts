/**
 * Session tokens, stored only as SHA-256 hashes, with their expiry inside the
 * record (Deno KV's own expiry is lazy and only a backstop here).
 *
 * @module
 */

import { KvGroupCommit } from "./group_commit.ts";
import { keys, type TokenRecord } from "./records.ts";

/** A token record with its hash. */
export interface TokenEntry extends TokenRecord {
  /** SHA-256 of the token, hex. */
  hash: string;
}

/** Token storage. */
export class TokenStore {
  readonly #kv: Deno.Kv;
  readonly #writes: KvGroupCommit;

  /** Wrap an open KV; new tokens are committed with concurrent writes by `writes`. */
  constructor(kv: Deno.Kv, writes = new KvGroupCommit(kv)) {
    this.#kv = kv;
    this.#writes = writes;
  }

  /** Store a new token record and its index entry (logins at once share a commit). */
  async put(hash: string, record: TokenRecord): Promise<void> {
    const expireIn = Math.max(1000, record.expires - Date.now()) + 60_000;
    await this.#writes.write([], {
      mutations: 2,
      mutate: (op) =>
        op.set(keys.token(hash), record, { expireIn }).set(
          keys.tokenIndex(record.kind, record.account, hash),
          record.created,
          { expireIn },
        ),
    });
  }

  /** The record of a hash, or null. Expiry is the caller's to check. */
  async get(hash: string): Promise<TokenRecord | null> {
    return (await this.#kv.get<TokenRecord>(keys.token(hash))).value;
  }

  /** Push a token's expiry forward. */
  async touch(hash: string, record: TokenRecord): Promise<void> {
    await this.put(hash, record);
  }

  /** Revoke one token. */
  async delete(hash: string, record: TokenRecord): Promise<void> {
    await this.#kv.atomic()
      .delete(keys.token(hash))
      .delete(keys.tokenIndex(record.kind, record.account, hash))
      .commit();
  }

  /** Every live token of an account. */
  async listFor(
    kind: "admin" | "user",
    account: string,
  ): Promise<TokenEntry[]> {
    const out: TokenEntry[] = [];
    const now = Date.now();
    for await (
      const entry of this.#kv.list({ prefix: keys.tokenIndex(kind, account) })
    ) {
      const hash = entry.key[3] as string;
      const record = await this.get(hash);
      if (record && record.expires > now) out.push({ ...record, hash });
    }
    return out;
  }

  /** Revoke every token of an account; returns how many. */
  async deleteAllFor(kind: "admin" | "user", account: string): Promise<number> {
    let n = 0;
    for await (
      const entry of this.#kv.list({ prefix: keys.tokenIndex(kind, account) })
    ) {
      const hash = entry.key[3] as string;
      await this.#kv.atomic().delete(keys.token(hash)).delete(entry.key)
        .commit();
      n++;
    }
    return n;
  }
}
