/**
 * PEM and certificate hashes, used by the server and by clients alike (a
 * client pins a server by the SHA-256 of its certificate).
 *
 * @module
 */

/** PEM-encode DER bytes with a label. */
export function toPem(label: string, der: Uint8Array): string {
  let b64 = "";
  for (let i = 0; i < der.length; i += 0x8000) {
    b64 += String.fromCharCode(...der.subarray(i, i + 0x8000));
  }
  const lines = btoa(b64).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${
    lines.join("\n")
  }\n-----END ${label}-----\n`;
}

/** Decode the first PEM block of a text. */
export function fromPem(pem: string): Uint8Array {
  const block = pem.match(
    /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/,
  );
  const body = (block ? block[2] : pem).replace(/\s+/g, "");
  return Uint8Array.from(atob(body), (c) => c.charCodeAt(0));
}

/** Lowercase hex of bytes. */
export function toHex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** SHA-256 of bytes, lowercase hex. */
export async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    bytes as Uint8Array<ArrayBuffer>,
  );
  return toHex(new Uint8Array(digest));
}

/** SHA-256 of a certificate's DER (from PEM), lowercase hex. */
export function certificateHash(certPem: string): Promise<string> {
  return sha256Hex(fromPem(certPem));
}
