/**
 * Readable and JSON output of documents for the CLI.
 *
 * @module
 */

import { Binary, EJSON } from "bson";
import { toBase64 } from "../shared/login/algorithms.ts";

function scalar(value: unknown): string {
  if (value instanceof Date) return value.toISOString();
  if (value instanceof Uint8Array) {
    return value.byteLength <= 48
      ? `base64:${toBase64(value)}`
      : `<${value.byteLength} bytes>`;
  }
  if (value === null || value === undefined) return "-";
  return String(value);
}

/** Render a value as indented `key: value` lines. */
export function readable(value: unknown, indent = ""): string {
  if (Array.isArray(value)) {
    if (value.length === 0) return `${indent}(none)`;
    return value.map((item) => {
      if (
        item && typeof item === "object" && !(item instanceof Date) &&
        !(item instanceof Uint8Array)
      ) {
        const body = readable(item, indent + "  ");
        return `${indent}- ${body.trimStart()}`;
      }
      return `${indent}- ${scalar(item)}`;
    }).join("\n");
  }
  if (
    value && typeof value === "object" && !(value instanceof Date) &&
    !(value instanceof Uint8Array)
  ) {
    const lines: string[] = [];
    for (const [key, item] of Object.entries(value)) {
      if (item === undefined) continue;
      if (
        item && typeof item === "object" && !(item instanceof Date) &&
        !(item instanceof Uint8Array)
      ) {
        const isEmpty = Array.isArray(item) && item.length === 0;
        lines.push(isEmpty ? `${indent}${key}: (none)` : `${indent}${key}:`);
        if (!isEmpty) lines.push(readable(item, indent + "  "));
      } else {
        lines.push(`${indent}${key}: ${scalar(item)}`);
      }
    }
    return lines.join("\n");
  }
  return indent + scalar(value);
}

/** Render a value as relaxed Extended JSON (binary as `$binary`, dates as `$date`). */
export function asJson(value: unknown): string {
  return EJSON.stringify(
    toBinary(value) as Record<string, unknown>,
    undefined,
    2,
    {
      relaxed: true,
    },
  );
}

function toBinary(value: unknown): unknown {
  if (value instanceof Uint8Array) return new Binary(value);
  if (Array.isArray(value)) return value.map(toBinary);
  if (value && typeof value === "object" && !(value instanceof Date)) {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = toBinary(v);
    return out;
  }
  return value;
}

/** Parse Extended JSON typed by hand into a document (binary, dates ...). */
export function parseJson(text: string): Record<string, unknown> {
  const doc = EJSON.parse(text, { relaxed: true });
  return convertBinary(doc) as Record<string, unknown>;
}

function convertBinary(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(convertBinary);
  if (value && typeof value === "object") {
    const maybe = value as { _bsontype?: string; buffer?: Uint8Array };
    if (maybe._bsontype === "Binary" && maybe.buffer) {
      return new Uint8Array(maybe.buffer);
    }
    if (value instanceof Date || value instanceof Uint8Array) return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = convertBinary(v);
    return out;
  }
  return value;
}
