/**
 * The client's side of a login (PROTOCOL.md §7.2): turn a challenge into the
 * parameters of `*_login_verify`, refusing anything that is not a challenge
 * of the server the client connected to, for this account and this key.
 *
 * The client computes the login context from what it knows itself (the host
 * it connected to, the account it asked for, its key) and only the nonce from
 * the challenge. A decrypted string is returned only when it is exactly 48
 * characters `[A-Za-z0-9]`, so the key is no decryption oracle for other data.
 *
 * Portable (browsers too).
 *
 * @module
 */

import {
  decryptChallenge,
  isLoginAlgorithm,
  type LoginAlgorithm,
  signTranscript,
} from "./algorithms.ts";
import {
  isChallengeSecret,
  loginContext,
  loginTranscript,
  NONCE_BYTES,
  normalizeServerName,
} from "./context.ts";

/** A private login key held by a client. */
export interface LoginKey {
  /** Its algorithm. */
  algorithm: LoginAlgorithm;
  /** The private key (sign for Ed25519, decrypt or derive for the others). */
  privateKey: CryptoKey;
  /**
   * The public key, for `HPKE-X25519` keys kept non-extractable (HPKE
   * needs it, and cannot derive it from such a key).
   */
  hpkePublicKey?: CryptoKey;
  /** Its key id. */
  keyId: string;
}

/** The `data` of a login request's answer. */
export interface LoginChallenge {
  /** Algorithm of the key the challenge is for. */
  algorithm: string;
  /** Id of that key. */
  key_id: string;
  /** The server's nonce (32 bytes). */
  nonce: Uint8Array;
  /** The encrypted random string (decryption algorithms only). */
  verification_string?: string;
  /** Seconds the challenge is valid. */
  expires_in?: number;
}

/** The proof parameters of `*_login_verify`. */
export type LoginProof =
  | { verification_string: string }
  | { signature: Uint8Array; client_nonce: Uint8Array };

/** A challenge this client must not answer. */
export class ChallengeRefused extends Error {
  /** Stable error code. */
  readonly code = "challenge_refused";

  /** Create the error. */
  constructor(message: string) {
    super(message);
    this.name = "ChallengeRefused";
  }
}

/**
 * Answer a challenge with `key`.
 *
 * @param who the kind and normalised account asked for, and the host the
 *   client connected to
 * @throws {ChallengeRefused} when the challenge is not for this key, does not
 *   open under this server's context or hides something else than a challenge
 */
export async function answerChallenge(
  key: LoginKey,
  challenge: LoginChallenge,
  who: { kind: "admin" | "user" | "module"; account: string; server: string },
): Promise<LoginProof> {
  if (
    !isLoginAlgorithm(challenge.algorithm) ||
    challenge.algorithm !== key.algorithm
  ) {
    throw new ChallengeRefused(
      `the server asked for an ${challenge.algorithm} key, this key is ${key.algorithm}`,
    );
  }
  if (challenge.key_id !== key.keyId) {
    throw new ChallengeRefused(
      `the server asked for key ${challenge.key_id}, this key is ${key.keyId} (is it registered for this account?)`,
    );
  }
  if (
    !(challenge.nonce instanceof Uint8Array) ||
    challenge.nonce.length !== NONCE_BYTES
  ) {
    throw new ChallengeRefused("the challenge has no nonce of 32 bytes");
  }
  const context = loginContext({
    algorithm: key.algorithm,
    kind: who.kind,
    account: who.account,
    keyId: key.keyId,
    server: normalizeServerName(who.server),
    nonce: challenge.nonce,
  });
  if (key.algorithm === "Ed25519") {
    const clientNonce = crypto.getRandomValues(new Uint8Array(32));
    return {
      signature: await signTranscript(
        key.privateKey,
        loginTranscript(context, clientNonce),
      ),
      client_nonce: clientNonce,
    };
  }
  if (typeof challenge.verification_string !== "string") {
    throw new ChallengeRefused("the challenge has no verification string");
  }
  let secret: string;
  try {
    secret = await decryptChallenge(
      key.algorithm,
      key.hpkePublicKey
        ? { privateKey: key.privateKey, publicKey: key.hpkePublicKey }
        : key.privateKey,
      challenge.verification_string,
      context,
    );
  } catch {
    throw new ChallengeRefused(
      `the challenge does not open with this key for ${who.kind} ${who.account} at ${
        normalizeServerName(who.server)
      } (another server's challenge, or another key)`,
    );
  }
  if (!isChallengeSecret(secret)) {
    throw new ChallengeRefused(
      "the challenge hides something else than a login challenge: not answered",
    );
  }
  return { verification_string: secret };
}
