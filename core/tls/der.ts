/**
 * A minimal DER (ASN.1) encoder: just what X.509 certificates need.
 *
 * @module
 */

import { concatBytes } from "../wire/bytes.ts";

/** Encode a tag-length-value. */
export function tlv(tag: number, content: Uint8Array): Uint8Array {
  const length = content.length;
  let header: number[];
  if (length < 0x80) header = [tag, length];
  else if (length < 0x100) header = [tag, 0x81, length];
  else if (length < 0x10000) header = [tag, 0x82, length >> 8, length & 0xff];
  else {
    header = [
      tag,
      0x83,
      (length >> 16) & 0xff,
      (length >> 8) & 0xff,
      length & 0xff,
    ];
  }
  const out = new Uint8Array(header.length + length);
  out.set(header);
  out.set(content, header.length);
  return out;
}

/** SEQUENCE of the given elements. */
export function sequence(...items: Uint8Array[]): Uint8Array {
  return tlv(0x30, concatBytes(...items));
}

/** SET of the given elements. */
export function set(...items: Uint8Array[]): Uint8Array {
  return tlv(0x31, concatBytes(...items));
}

/** INTEGER from unsigned big-endian bytes (a leading zero is added when needed). */
export function integer(bytes: Uint8Array): Uint8Array {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0) start++;
  let body = bytes.subarray(start);
  if (body[0] & 0x80) body = concatBytes(new Uint8Array([0]), body);
  return tlv(0x02, body);
}

/** INTEGER from a small non-negative number. */
export function smallInteger(value: number): Uint8Array {
  return integer(new Uint8Array([value >> 8, value & 0xff]));
}

/** OBJECT IDENTIFIER from dotted text. */
export function oid(dotted: string): Uint8Array {
  const parts = dotted.split(".").map(Number);
  const bytes = [parts[0] * 40 + parts[1]];
  for (const part of parts.slice(2)) {
    const stack = [part & 0x7f];
    let rest = Math.floor(part / 128);
    while (rest > 0) {
      stack.unshift((rest & 0x7f) | 0x80);
      rest = Math.floor(rest / 128);
    }
    bytes.push(...stack);
  }
  return tlv(0x06, new Uint8Array(bytes));
}

/** UTF8String. */
export function utf8String(text: string): Uint8Array {
  return tlv(0x0c, new TextEncoder().encode(text));
}

/** UTCTime (years 1950-2049) or GeneralizedTime beyond. */
export function time(date: Date): Uint8Array {
  const iso = date.toISOString().replace(/[-:T]/g, "").slice(0, 14) + "Z";
  const year = date.getUTCFullYear();
  if (year >= 1950 && year < 2050) {
    return tlv(0x17, new TextEncoder().encode(iso.slice(2)));
  }
  return tlv(0x18, new TextEncoder().encode(iso));
}

/** BIT STRING with no unused bits. */
export function bitString(bytes: Uint8Array): Uint8Array {
  return tlv(0x03, concatBytes(new Uint8Array([0]), bytes));
}

/** OCTET STRING. */
export function octetString(bytes: Uint8Array): Uint8Array {
  return tlv(0x04, bytes);
}

/** BOOLEAN. */
export function boolean(value: boolean): Uint8Array {
  return tlv(0x01, new Uint8Array([value ? 0xff : 0]));
}

/** Context-specific constructed (EXPLICIT) tag `[n]`. */
export function explicit(n: number, content: Uint8Array): Uint8Array {
  return tlv(0xa0 | n, content);
}

/** Context-specific primitive (IMPLICIT) tag `[n]`. */
export function implicit(n: number, content: Uint8Array): Uint8Array {
  return tlv(0x80 | n, content);
}
