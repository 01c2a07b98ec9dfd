/**
 * Message ids (docs/PROTOCOL.md section 13.1).
 *
 * - The **global id** `<id>@<origin domain>` names a message on every
 *   server: the id its origin gave it, and the domain of its sender, the one
 *   server that created it (for mail from another server: the domain that
 *   server authenticated for, never anything from its payload).
 * - The **local id** (`message_id`) keys the message on this server. A
 *   message created here keeps its id; a message from elsewhere gets a hash
 *   of its global id. So another server can never name, nor collide with, a
 *   message it did not create, and a retry of the same (origin, id) maps to
 *   the same local id and adds nothing.
 *
 * @module
 */

import { createHash } from "node:crypto";

/** SHA-256 of UTF-8 text, hex. */
export function sha256Hex(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Random 24 hex digits. */
function randomId(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(12)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** A new message's id: derived from sender and client id (idempotent), else random. */
export function newMessageId(sender: string, clientId?: string): string {
  return clientId === undefined
    ? randomId()
    : sha256Hex(`${sender}\n${clientId}`).slice(0, 24);
}

/**
 * The id of the copy a Bcc recipient gets with a body of its own:
 * `<message id>-<16 hex>`, derived from the message and the address (a retry
 * gets the same id; the suffix tells nothing about other Bcc recipients).
 */
export function bccMessageId(messageId: string, address: string): string {
  return `${messageId}-${
    sha256Hex(`AMTP bcc\n${messageId}\n${address}`).slice(0, 16)
  }`;
}

/** The message a Bcc message id was derived from (the id itself otherwise). */
export function mainMessageId(id: string): string {
  return id.replace(/-[0-9a-f]{16}$/, "");
}

/** The domain of an address. */
export function domainOf(address: string): string {
  return address.slice(address.lastIndexOf("@") + 1).toLowerCase();
}

/** `<id>@<domain>`. */
export function globalId(id: string, domain: string): string {
  return `${id}@${domain}`;
}

const DOMAIN =
  /^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}$/;

/**
 * A global id from another server's payload, checked: an id of 1 to 128
 * printable characters without spaces, `@`, and a domain name. Null when it
 * is not one.
 */
export function parseGlobalId(
  value: unknown,
): { id: string; domain: string; global: string } | null {
  if (typeof value !== "string" || value.length > 400) return null;
  const at = value.lastIndexOf("@");
  const id = value.slice(0, at);
  const domain = value.slice(at + 1).toLowerCase();
  if (at < 1 || id.length > 128 || !/^[\x21-\x7e]+$/.test(id)) return null;
  if (!DOMAIN.test(domain)) return null;
  return { id, domain, global: globalId(id, domain) };
}

/**
 * The local id of a message with global id `global`: its own id when its
 * origin domain is hosted here (it was made here), else the first 24 hex
 * digits of SHA-256 over `AMTP message\n<global id>`.
 */
export function localMessageId(
  global: { id: string; global: string },
  originHostedHere: boolean,
): string {
  return originHostedHere
    ? global.id
    : sha256Hex(`AMTP message\n${global.global}`).slice(0, 24);
}
