/**
 * Challenge-response login (PROTOCOL.md §7): the client proves it holds the
 * private key of a key registered for the account, bound to this server,
 * this account and a fresh nonce (`context.ts`).
 *
 * - `Ed25519`: the challenge is a nonce; the client signs the transcript
 *   (context and its own nonce).
 * - `HPKE-X25519`, `RSA-OAEP-256`: the server encrypts a random string of 48
 *   characters with the context as HPKE `info` / OAEP `label`; the client
 *   decrypts it and sends it back; it is compared in constant time.
 *
 * A login request names the server the client connected to; only this
 * server's own names are accepted. A challenge is single-use, expires after
 * the configured time and is bound to the session that asked for it (it
 * lives in that session's state). Unknown accounts get decoys (`decoy.ts`);
 * failures are counted by the guard (`guard.ts`).
 *
 * @module
 */

import { timingSafeEqual } from "node:crypto";
import {
  type AccountStore,
  type FailureRecord,
  type FailureScope,
  type FailureStore,
  type KeyRecord,
  serverSecret,
} from "../../kv/mod.ts";
import type { Logger } from "../log/mod.ts";
import { ErrorCode, ProtocolError, type SessionInfo } from "../protocol/mod.ts";
import type { LoginAlgorithm } from "../../shared/login/algorithms.ts";
import {
  CLIENT_NONCE_BYTES,
  loginContext,
  loginTranscript,
  NONCE_BYTES,
  normalizeServerName,
  SECRET_ALPHABET,
  SECRET_LENGTH,
} from "../../shared/login/context.ts";
import { Decoys } from "./decoy.ts";
import { type GuardState, LoginGuard, sourceOf } from "./guard.ts";
import {
  encryptSecret,
  type ServerKey,
  ServerKeyCache,
  verifySignature,
} from "./server_crypto.ts";
import type { TokenService } from "./tokens.ts";

const ENCODER = new TextEncoder();

/** Pending challenges one session may hold. */
const MAX_PENDING = 8;

/** A challenge waiting for its answer, in the session's state. */
interface Pending {
  algorithm: LoginAlgorithm;
  /** The context (Ed25519: the start of the transcript). */
  context: Uint8Array;
  /** The random string (decryption algorithms). */
  secret?: string;
  /** The key to verify with (Ed25519 of a real account). */
  verifyKey?: ServerKey;
  expires: number;
  known: boolean;
  /** What the guard read for the request. */
  guard: GuardState;
}

/** What a login request answers. */
export interface Challenge {
  /** Algorithm of the key the challenge is for. */
  algorithm: LoginAlgorithm;
  /** Id of that key. */
  key_id: string;
  /** The server's nonce, 32 bytes. */
  nonce: Uint8Array;
  /** The encrypted random string, base64 (decryption algorithms only). */
  verification_string?: string;
  /** Seconds the challenge is valid. */
  expires_in: number;
}

/** The proof a login verification carries. */
export interface LoginAnswer {
  /** The decrypted random string (decryption algorithms). */
  verification_string?: string;
  /** The Ed25519 signature of the transcript. */
  signature?: Uint8Array;
  /** The client's nonce in the transcript. */
  client_nonce?: Uint8Array;
}

/** Options of {@link LoginService}. */
export interface LoginServiceOptions {
  /** The core database (the login secret, decoy keys). */
  kv: Deno.Kv;
  /** Account records. */
  accounts: AccountStore;
  /** Login guard records. */
  failures: FailureStore;
  /** Token issuing. */
  tokens: TokenService;
  /** Seconds a challenge is valid. */
  challengeTtl: number;
  /** The names this server answers to (`serverNames` of the configuration). */
  names: readonly string[];
  /** Logger. */
  log: Logger;
  /** Milliseconds the decoys' key count is used before a recount. */
  decoyRefreshMs?: number;
  /** Clock (tests). */
  now?: () => number;
}

function randomSecret(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(SECRET_LENGTH * 2));
  let out = "";
  for (const b of bytes) {
    if (b < 248) out += SECRET_ALPHABET[b % 62];
    if (out.length === SECRET_LENGTH) return out;
  }
  return randomSecret();
}

/** Runs logins. */
export class LoginService {
  readonly #options: LoginServiceOptions;
  readonly #now: () => number;
  readonly #names: Set<string>;
  readonly #guard: LoginGuard;
  readonly #decoys: Decoys;
  readonly #keys = new ServerKeyCache();

  private constructor(options: LoginServiceOptions, secret: Uint8Array) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#names = new Set(options.names.map(normalizeServerName));
    this.#guard = new LoginGuard({
      store: options.failures,
      secret,
      now: this.#now,
    });
    this.#decoys = new Decoys({
      kv: options.kv,
      accounts: options.accounts,
      secret,
      refreshMs: options.decoyRefreshMs,
      now: this.#now,
    });
  }

  /** Create the service (reads or creates the server's login secret). */
  static async open(options: LoginServiceOptions): Promise<LoginService> {
    const service = new LoginService(
      options,
      await serverSecret(options.kv, "login"),
    );
    // Count the accounts' keys for decoys now rather than on the first one.
    service.#decoys.count().catch((error) =>
      options.log.warn("decoy_count_failed", { error: String(error) })
    );
    return service;
  }

  async #keysOf(
    kind: "admin" | "user",
    account: string,
  ): Promise<readonly KeyRecord[]> {
    const record = kind === "admin"
      ? await this.#options.accounts.getAdmin(account)
      : await this.#options.accounts.readUser(account);
    if (!record || record.disabled) return [];
    return record.keys;
  }

  /**
   * Create a challenge for an account on a session.
   *
   * @param account a normalised admin name or user address
   * @param ask the server name the client connected to, and the key id it holds
   * @throws {ProtocolError} WRONG_SERVER or LOGIN_BLOCKED
   */
  async request(
    kind: "admin" | "user",
    account: string,
    session: SessionInfo,
    ask: { server: string; keyId?: string },
  ): Promise<Challenge> {
    const server = normalizeServerName(ask.server);
    if (!this.#names.has(server)) {
      throw new ProtocolError(
        ErrorCode.WRONG_SERVER,
        `this server is ${
          [...this.#names][0]
        }, not "${server}": connect to the server you mean to log in to`,
        { hostname: [...this.#names][0] },
      );
    }
    const guard = await this.#guard.check(
      `${kind}:${account}`,
      session.remoteAddr,
    );
    const keys = await this.#keysOf(kind, account);
    const real = ask.keyId ? keys.find((k) => k.id === ask.keyId) : keys[0];
    const target = real
      ? {
        algorithm: real.algorithm,
        keyId: real.id,
        key: this.#keys.get(real.algorithm, real.public_key),
      }
      : await this.#decoys.decoy(kind, account, ask.keyId);
    const nonce = crypto.getRandomValues(new Uint8Array(NONCE_BYTES));
    const context = loginContext({
      algorithm: target.algorithm,
      kind,
      account,
      keyId: target.keyId,
      server,
      nonce,
    });
    const pending: Pending = {
      algorithm: target.algorithm,
      context,
      expires: this.#now() + this.#options.challengeTtl * 1000,
      known: Boolean(real),
      guard,
    };
    const challenge: Challenge = {
      algorithm: target.algorithm,
      key_id: target.keyId,
      nonce,
      expires_in: this.#options.challengeTtl,
    };
    if (target.algorithm === "Ed25519") {
      pending.verifyKey = target.key;
    } else if (target.key && target.key.algorithm !== "Ed25519") {
      pending.secret = randomSecret();
      challenge.verification_string = encryptSecret(
        target.key,
        pending.secret,
        context,
      );
    }
    const slot = `login:${kind}:${account}`;
    session.data.delete(slot);
    const held = [...session.data.keys()].filter((k) => k.startsWith("login:"));
    if (held.length >= MAX_PENDING) session.data.delete(held[0]);
    session.data.set(slot, pending);
    return challenge;
  }

  /**
   * Check the answer to this session's pending challenge; issue a token.
   * An answer with no pending challenge is refused without counting (it
   * proves nothing and risks nothing).
   *
   * @throws {ProtocolError} LOGIN_BLOCKED, LOGIN_FAILED or CHALLENGE_EXPIRED
   */
  async verify(
    kind: "admin" | "user",
    account: string,
    answer: LoginAnswer,
    context: { session: SessionInfo; label?: string },
  ): Promise<{ token: string; expires: Date }> {
    const { session } = context;
    const slot = `login:${kind}:${account}`;
    const pending = session.data.get(slot) as Pending | undefined;
    session.data.delete(slot);
    if (!pending) {
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
    const state = await this.#guard.recheck(pending.guard);
    if (!this.#proves(pending, answer) || !pending.known) {
      await this.#guard.failed(state);
      this.#options.log.info("login_failed", {
        kind,
        account,
        ip: session.remoteAddr,
      });
      throw new ProtocolError(
        ErrorCode.LOGIN_FAILED,
        "login failed: the answer does not prove the key",
      );
    }
    const [, issued] = await Promise.all([
      this.#guard.succeeded(state),
      this.#options.tokens.issue(kind, account, {
        ip: session.remoteAddr,
        label: context.label,
      }),
    ]);
    this.#options.log.info("login", { kind, account, ip: session.remoteAddr });
    return issued;
  }

  /** Does the answer prove the pending challenge's key? */
  #proves(pending: Pending, answer: LoginAnswer): boolean {
    if (pending.algorithm === "Ed25519") {
      const { signature, client_nonce: clientNonce } = answer;
      if (
        !pending.verifyKey || pending.verifyKey.algorithm !== "Ed25519" ||
        !signature || !clientNonce ||
        clientNonce.length < CLIENT_NONCE_BYTES.min ||
        clientNonce.length > CLIENT_NONCE_BYTES.max
      ) return false;
      return verifySignature(
        pending.verifyKey.key,
        loginTranscript(pending.context, clientNonce),
        signature,
      );
    }
    if (
      !pending.secret || typeof answer.verification_string !== "string"
    ) return false;
    // Compared in constant time; only the length (public: SECRET_LENGTH
    // ASCII characters) may end it early.
    const given = ENCODER.encode(answer.verification_string);
    const secret = ENCODER.encode(pending.secret);
    return given.length === secret.length && timingSafeEqual(given, secret);
  }

  /**
   * Try a one-time code (an invitation, PROTOCOL.md §8.1) under the guard:
   * refused with LOGIN_BLOCKED while the source is blocked, and a wrong code
   * (the attempt fails with NOT_FOUND) counted as a failed attempt of the
   * source (`code:SOURCE` for the account scopes, and the source's own
   * count shared with logins).
   *
   * @throws {ProtocolError} LOGIN_BLOCKED, or what the attempt throws
   */
  async tryCode<T>(remoteAddr: string, attempt: () => Promise<T>): Promise<T> {
    const state = await this.#guard.check(
      `code:${sourceOf(remoteAddr)}`,
      remoteAddr,
    );
    try {
      return await attempt();
    } catch (error) {
      if (
        error instanceof ProtocolError && error.code === ErrorCode.NOT_FOUND
      ) await this.#guard.failed(state);
      throw error;
    }
  }

  /** The login guard, for the other logins it watches (module links). */
  get guard(): LoginGuard {
    return this.#guard;
  }

  /** Current guard records (blocks, slow-downs and counts), for admins. */
  blocks(): Promise<FailureRecord[]> {
    return this.#guard.blocks();
  }

  /** Lift blocks of a scope; false when there was none. */
  async unblock(scope: FailureScope, id: string): Promise<boolean> {
    return (await this.#guard.unblock(scope, id)) > 0;
  }
}
