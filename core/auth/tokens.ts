/**
 * Session tokens: 256 random bits given to the client once, stored only as a
 * SHA-256 hash with an expiry inside the record, checked on every use and
 * slid forward on use.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash } from "node:crypto";
import type { TokenRecord, TokenStore } from "../../kv/mod.ts";
import { type Caller, ErrorCode, ProtocolError } from "../protocol/mod.ts";

/**
 * Milliseconds a token record read from KV is reused. A revocation made by
 * another server process sharing the KV takes effect within this time; one
 * made by this process at once.
 */
export const CACHE_MS = 2000;
/** Token records kept in the cache. */
const CACHE_MAX = 10_000;

/** Hex of bytes (native: a login makes one). */
function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length)
    .toString("hex");
}

/**
 * SHA-256 of a token, hex: the only form in which a token is stored.
 * Synchronous native hashing (`node:crypto`): it runs on every authenticated
 * request, where an asynchronous Web Crypto call costs a trip to a thread.
 */
export function hashToken(token: string): Promise<string> {
  return Promise.resolve(createHash("sha256").update(token).digest("hex"));
}

/** Options of {@link TokenService}. */
export interface TokenServiceOptions {
  /** Seconds an admin token lives after its last use. */
  adminTtl: number;
  /** Seconds a user token lives after its last use. */
  userTtl: number;
  /** Clock in epoch milliseconds (tests). */
  now?: () => number;
}

/** A revocation: one token (its hash), or every token of an account. */
export interface Revocation {
  /** Admin or user. */
  kind: "admin" | "user";
  /** The account. */
  account: string;
  /** The token's hash; absent when every token of the account was revoked. */
  hash?: string;
}

/** Issues, checks and revokes tokens. */
export class TokenService {
  readonly #store: TokenStore;
  readonly #revoked = new Set<(revocation: Revocation) => void>();
  readonly #ttl: Record<"admin" | "user", number>;
  readonly #now: () => number;
  /** Recently read records by hash: spares a KV read per request. */
  readonly #cache = new Map<string, { record: TokenRecord; at: number }>();

  /** Create the service over a token store. */
  constructor(store: TokenStore, options: TokenServiceOptions) {
    this.#store = store;
    this.#ttl = { admin: options.adminTtl, user: options.userTtl };
    this.#now = options.now ?? Date.now;
  }

  /** Issue a token; returns it (the only time it exists in clear). */
  async issue(
    kind: "admin" | "user",
    account: string,
    context: { ip: string; label?: string },
  ): Promise<{ token: string; expires: Date }> {
    const token = hex(crypto.getRandomValues(new Uint8Array(32)));
    const ttl = this.#ttl[kind];
    const expires = this.#now() + ttl * 1000;
    await this.#store.put(await hashToken(token), {
      kind,
      account,
      created: new Date(this.#now()),
      expires,
      ttl,
      ip: context.ip,
      label: context.label ?? "",
    });
    return { token, expires: new Date(expires) };
  }

  /**
   * Check a token of the expected kind and slide its expiry.
   *
   * @throws {ProtocolError} NOT_LOGGED_IN (unknown or expired) or FORBIDDEN (other kind)
   */
  async verify(kind: "admin" | "user", token: string): Promise<Caller> {
    const hash = await hashToken(token);
    const now = this.#now();
    const cached = this.#cache.get(hash);
    let record: TokenRecord | null;
    if (cached && now - cached.at < CACHE_MS) {
      record = cached.record;
    } else {
      record = await this.#store.get(hash);
      if (record) {
        if (this.#cache.size >= CACHE_MAX) {
          this.#cache.delete(this.#cache.keys().next().value!);
        }
        this.#cache.set(hash, { record, at: now });
      } else {
        this.#cache.delete(hash);
      }
    }
    if (!record) {
      throw new ProtocolError(
        ErrorCode.NOT_LOGGED_IN,
        "the token is not valid: log in again",
      );
    }
    if (record.expires <= now) {
      throw new ProtocolError(
        ErrorCode.NOT_LOGGED_IN,
        "the token has expired: log in again",
      );
    }
    if (record.kind !== kind) {
      throw new ProtocolError(
        ErrorCode.FORBIDDEN,
        `this command needs ${kind === "admin" ? "an admin" : "a user"} token`,
      );
    }
    // Slide, but write at most about once per tenth of the lifetime.
    const fresh = now + record.ttl * 1000;
    if (fresh - record.expires > Math.min(60_000, record.ttl * 100)) {
      const touched = { ...record, expires: fresh };
      await this.#store.touch(hash, touched);
      this.#cache.set(hash, { record: touched, at: now });
    }
    return { kind, name: record.account, tokenHash: hash };
  }

  /**
   * Be told of revocations made by this process (live sessions stop
   * receiving the pushes of a revoked user token).
   */
  onRevoke(listener: (revocation: Revocation) => void): void {
    this.#revoked.add(listener);
  }

  /** Revoke the token with this hash; false if it did not exist. */
  async revoke(hash: string): Promise<boolean> {
    this.#cache.delete(hash);
    const record = await this.#store.get(hash);
    if (!record) return false;
    await this.#store.delete(hash, record);
    for (const listener of this.#revoked) {
      listener({ kind: record.kind, account: record.account, hash });
    }
    return true;
  }

  /** The live tokens of an account (never the tokens themselves). */
  list(
    kind: "admin" | "user",
    account: string,
  ): Promise<(TokenRecord & { hash: string })[]> {
    return this.#store.listFor(kind, account);
  }

  /** Revoke every token of an account. */
  async revokeAll(kind: "admin" | "user", account: string): Promise<number> {
    for (const [hash, entry] of this.#cache) {
      if (entry.record.kind === kind && entry.record.account === account) {
        this.#cache.delete(hash);
      }
    }
    const count = await this.#store.deleteAllFor(kind, account);
    for (const listener of this.#revoked) listener({ kind, account });
    return count;
  }
}
