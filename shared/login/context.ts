/**
 * What a login proof is bound to (PROTOCOL.md §7.2): the login context names
 * the protocol version, the algorithm, the kind of account, the account, the
 * key, the server name the client connected to and the server's nonce. It is
 * the HPKE `info` and the RSA-OAEP `label` of a challenge, and (with the
 * client's nonce) the transcript an Ed25519 key signs. Client and server each
 * compute it from what they know; a challenge relayed from another server, or
 * for another account, does not open or verify.
 *
 * Shared by the server and the client library (portable: no Deno API).
 *
 * @module
 */

import { PROTOCOL_VERSION } from "../version.ts";
import type { LoginAlgorithm } from "./algorithms.ts";

/** First line of every context: the login scheme and its version. */
export const LOGIN_SCHEME = "AMTP-LOGIN-2";
/** Bytes of the server's nonce. */
export const NONCE_BYTES = 32;
/** Bytes of a client's nonce, at least and at most. */
export const CLIENT_NONCE_BYTES = { min: 16, max: 64 } as const;
/** Characters of the random string a decryption challenge hides. */
export const SECRET_LENGTH = 48;
/** The alphabet of that string. */
export const SECRET_ALPHABET =
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/** What a login context binds. */
export interface LoginContextFields {
  /** The key's algorithm. */
  algorithm: LoginAlgorithm;
  /** `admin`, `user` or `module` (a remote module, PROTOCOL.md §12.9). */
  kind: "admin" | "user" | "module";
  /** The normalised account (admin name, user address, or `name@version` of a module). */
  account: string;
  /** The key id the challenge is for. */
  keyId: string;
  /** The server name, normalised ({@link normalizeServerName}). */
  server: string;
  /** The server's nonce. */
  nonce: Uint8Array;
}

/** Base64url without padding (RFC 4648 §5). */
export function base64url(bytes: Uint8Array): string {
  let text = "";
  for (const b of bytes) text += String.fromCharCode(b);
  return btoa(text).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/**
 * A server name as contexts use it: lowercase, without the brackets of an
 * IPv6 literal or a final dot. Pass the host of the URL the client connected
 * to (`new URL(url).hostname`, which already canonicalises IP literals and
 * international names).
 */
export function normalizeServerName(host: string): string {
  return host.trim().toLowerCase().replace(/^\[(.*)\]$/, "$1").replace(
    /\.$/,
    "",
  );
}

const FIELD = /^[\x21-\x7e]{1,320}$/;

function line(name: string, value: string): string {
  if (!FIELD.test(value)) {
    throw new TypeError(`login context: ${name} must be printable ASCII`);
  }
  return `${name}=${value}\n`;
}

/** The login context: ASCII lines `name=value`, each ending in LF. */
export function loginContext(fields: LoginContextFields): Uint8Array {
  if (fields.nonce.length !== NONCE_BYTES) {
    throw new TypeError(`login context: the nonce has ${NONCE_BYTES} bytes`);
  }
  return new TextEncoder().encode(
    `${LOGIN_SCHEME}\n` +
      line("protocol", String(PROTOCOL_VERSION)) +
      line("algorithm", fields.algorithm) +
      line("kind", fields.kind) +
      line("account", fields.account) +
      line("key", fields.keyId) +
      line("server", fields.server) +
      line("nonce", base64url(fields.nonce)),
  );
}

/** What an Ed25519 key signs: the context and a line with the client's nonce. */
export function loginTranscript(
  context: Uint8Array,
  clientNonce: Uint8Array,
): Uint8Array {
  if (
    clientNonce.length < CLIENT_NONCE_BYTES.min ||
    clientNonce.length > CLIENT_NONCE_BYTES.max
  ) {
    throw new TypeError(
      `login transcript: the client nonce has ${CLIENT_NONCE_BYTES.min} to ${CLIENT_NONCE_BYTES.max} bytes`,
    );
  }
  const tail = new TextEncoder().encode(
    line("client_nonce", base64url(clientNonce)),
  );
  const out = new Uint8Array(context.length + tail.length);
  out.set(context);
  out.set(tail, context.length);
  return out;
}

/** Is `text` shaped like a challenge's random string (and nothing else)? */
export function isChallengeSecret(text: string): boolean {
  return text.length === SECRET_LENGTH && /^[A-Za-z0-9]+$/.test(text);
}
