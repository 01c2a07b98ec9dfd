/**
 * Challenge-response login, as the draft describes it: the server encrypts a
 * fresh random string of 48 characters with a public key registered for the
 * account; the client decrypts it and sends it back; a match earns a token.
 *
 * - A challenge is single-use, expires after the configured time and is bound
 *   to the session that asked for it (it lives in that session's state).
 * - The answer is compared in constant time.
 * - An unknown account (or key) gets a challenge of the same shape, encrypted
 *   to a throw-away key, so answers do not reveal which accounts exist.
 * - Failures are counted per account and per client IP in KV (shared by all
 *   server processes); past a free allowance each further failure doubles the
 *   block, up to an hour.
 *
 * @module
 */

import { createHash, generateKeyPairSync, timingSafeEqual } from "node:crypto";
import type {
  AccountStore,
  FailureRecord,
  FailureStore,
  KeyRecord,
} from "../../kv/mod.ts";
import type { Logger } from "../log/mod.ts";
import { ErrorCode, ProtocolError, type SessionInfo } from "../protocol/mod.ts";
import {
  encryptChallenge,
  importLoginPublicKey,
  type LoginAlgorithm,
  toBase64,
} from "./algorithms.ts";
import { sealChallenge, type SealKey, sealKey } from "./seal.ts";
import { hashToken, type TokenService } from "./tokens.ts";

/** Failures of one account allowed before blocks start. */
export const FREE_ACCOUNT_FAILURES = 5;
/** Failures from one IP allowed before blocks start. */
export const FREE_IP_FAILURES = 20;
/** Longest block in seconds. */
export const MAX_BLOCK_SECONDS = 3600;
/** Pending challenges one session may hold. */
const MAX_PENDING = 8;
const ALPHABET =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

interface Pending {
  secret: string;
  expires: number;
  known: boolean;
}

/** What a login request answers. */
export interface Challenge {
  /** The encrypted random string, base64. */
  verification_string: string;
  /** Id of the key it was encrypted for. */
  key_id: string;
  /** Algorithm of that key. */
  algorithm: LoginAlgorithm;
  /** Seconds the challenge is valid. */
  expires_in: number;
}

/** Options of {@link LoginService}. */
export interface LoginServiceOptions {
  /** Account records. */
  accounts: AccountStore;
  /** Failure counters. */
  failures: FailureStore;
  /** Token issuing. */
  tokens: TokenService;
  /** Seconds a challenge is valid. */
  challengeTtl: number;
  /** Logger. */
  log: Logger;
  /** Clock (tests). */
  now?: () => number;
}

function randomString(length: number): string {
  const bytes = crypto.getRandomValues(new Uint8Array(length * 2));
  let out = "";
  for (const b of bytes) {
    if (b < 248) out += ALPHABET[b % 62];
    if (out.length === length) break;
  }
  return out.length === length ? out : randomString(length);
}

/** Runs logins. */
export class LoginService {
  readonly #options: LoginServiceOptions;
  readonly #now: () => number;
  #decoy?: SealKey;
  readonly #decoySalt = randomString(32);

  /** Create the service. */
  constructor(options: LoginServiceOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
  }

  async #keysOf(
    kind: "admin" | "user",
    account: string,
  ): Promise<KeyRecord[]> {
    const record = kind === "admin"
      ? await this.#options.accounts.getAdmin(account)
      : await this.#options.accounts.getUser(account);
    if (!record || record.disabled) return [];
    return record.keys;
  }

  #decoyKey(): SealKey {
    if (!this.#decoy) {
      const spki = generateKeyPairSync("x25519").publicKey.export({
        format: "der",
        type: "spki",
      });
      this.#decoy = sealKey(new Uint8Array(spki));
    }
    return this.#decoy;
  }

  /** Refuse when the account or the IP is blocked; tells whether the account has failures on record. */
  async #checkBlocked(account: string, ip: string): Promise<boolean> {
    const now = this.#now();
    const [byAccount, byIp] = await this.#options.failures.getMany([
      ["account", account],
      ["ip", ip],
    ]);
    const until = Math.max(
      byAccount?.blocked_until ?? 0,
      byIp?.blocked_until ?? 0,
    );
    if (until > now) {
      const retry = Math.ceil((until - now) / 1000);
      throw new ProtocolError(
        ErrorCode.LOGIN_BLOCKED,
        `too many failed logins: try again in ${retry} s`,
        { retry_after: retry },
      );
    }
    return byAccount !== null;
  }

  async #recordFailure(account: string, ip: string): Promise<void> {
    const now = this.#now();
    for (
      const [scope, id, free] of [
        ["account", account, FREE_ACCOUNT_FAILURES],
        ["ip", ip, FREE_IP_FAILURES],
      ] as const
    ) {
      const old = await this.#options.failures.get(scope, id);
      const failures = (old?.failures ?? 0) + 1;
      const blocked_until = failures > free
        ? now + 1000 * Math.min(MAX_BLOCK_SECONDS, 2 ** (failures - free - 1))
        : 0;
      await this.#options.failures.put({
        scope,
        id,
        failures,
        blocked_until,
        last: new Date(now),
      });
    }
  }

  /**
   * Create a challenge for an account on a session.
   *
   * @param account a normalised admin name or user address
   */
  async request(
    kind: "admin" | "user",
    account: string,
    session: SessionInfo,
    keyId?: string,
  ): Promise<Challenge> {
    await this.#checkBlocked(`${kind}:${account}`, session.remoteAddr);
    const keys = await this.#keysOf(kind, account);
    const key = keyId ? keys.find((k) => k.id === keyId) : keys[0];
    const secret = randomString(48);
    let challenge: Challenge;
    if (key) {
      challenge = {
        verification_string: key.algorithm === "HPKE-X25519"
          // Native and synchronous: the same bytes as the portable library.
          ? toBase64(
            sealChallenge(
              sealKey(key.public_key),
              new TextEncoder().encode(secret),
            ),
          )
          : await encryptChallenge(
            key.algorithm,
            await importLoginPublicKey(key.algorithm, key.public_key),
            secret,
          ),
        key_id: key.id,
        algorithm: key.algorithm,
        expires_in: this.#options.challengeTtl,
      };
    } else {
      const fakeId = (await hashToken(`${this.#decoySalt}:${kind}:${account}`))
        .slice(0, 16);
      challenge = {
        verification_string: toBase64(
          sealChallenge(this.#decoyKey(), new TextEncoder().encode(secret)),
        ),
        key_id: keyId ?? fakeId,
        algorithm: "HPKE-X25519",
        expires_in: this.#options.challengeTtl,
      };
    }
    const slot = `login:${kind}:${account}`;
    session.data.delete(slot);
    const pending = [...session.data.keys()].filter((k) =>
      k.startsWith("login:")
    );
    if (pending.length >= MAX_PENDING) session.data.delete(pending[0]);
    session.data.set(
      slot,
      {
        secret,
        expires: this.#now() + this.#options.challengeTtl * 1000,
        known: Boolean(key),
      } satisfies Pending,
    );
    return challenge;
  }

  /**
   * Check the answer to this session's pending challenge; issue a token.
   *
   * @throws {ProtocolError} LOGIN_BLOCKED, LOGIN_FAILED or CHALLENGE_EXPIRED
   */
  async verify(
    kind: "admin" | "user",
    account: string,
    answer: string,
    context: { session: SessionInfo; label?: string },
  ): Promise<{ token: string; expires: Date }> {
    const { session } = context;
    const limitId = `${kind}:${account}`;
    const failedBefore = await this.#checkBlocked(
      limitId,
      session.remoteAddr,
    );
    const slot = `login:${kind}:${account}`;
    const pending = session.data.get(slot) as Pending | undefined;
    session.data.delete(slot);
    if (!pending) {
      await this.#recordFailure(limitId, session.remoteAddr);
      throw new ProtocolError(
        ErrorCode.LOGIN_FAILED,
        "login failed: no pending challenge for this account on this session",
      );
    }
    if (pending.expires <= this.#now()) {
      throw new ProtocolError(
        ErrorCode.CHALLENGE_EXPIRED,
        "the challenge has expired: request a new one",
      );
    }
    // Equal-length digests, compared in constant time.
    const a = createHash("sha256").update(answer).digest();
    const b = createHash("sha256").update(pending.secret).digest();
    if (!timingSafeEqual(a, b) || !pending.known) {
      await this.#recordFailure(limitId, session.remoteAddr);
      this.#options.log.info("login_failed", {
        kind,
        account,
        ip: session.remoteAddr,
      });
      throw new ProtocolError(
        ErrorCode.LOGIN_FAILED,
        "login failed: the answer does not match",
      );
    }
    if (failedBefore) await this.#options.failures.delete("account", limitId);
    this.#options.log.info("login", { kind, account, ip: session.remoteAddr });
    return await this.#options.tokens.issue(kind, account, {
      ip: session.remoteAddr,
      label: context.label,
    });
  }

  /** Current failure records that block or count, for admins. */
  async blocks(): Promise<FailureRecord[]> {
    return await this.#options.failures.list();
  }

  /** Lift a block; false when there was none. */
  unblock(scope: "account" | "ip", id: string): Promise<boolean> {
    return this.#options.failures.delete(scope, id);
  }
}
