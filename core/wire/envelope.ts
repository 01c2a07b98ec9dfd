/**
 * The command envelope and BSON (de)serialisation, shared by the server and
 * the client library. No command knowledge lives here.
 *
 * - Request: `{command, requestID?, ...parameters}`
 * - Response: `{command, requestID, error, message?, data?}`
 * - Push: `{event, module?, data}`
 *
 * @module
 */

import { Binary, BSON, Double, Int32, Long } from "bson";

/** A decoded BSON document. */
export type Document = Record<string, unknown>;

/**
 * A request id: a string, or a number read with its exact BSON type (int32,
 * int64 or double, see {@link exactRequestId}) so that it is echoed as sent.
 */
export type RequestId = string | number | Int32 | Long | Double;

/** A request as it arrives: the command name plus top-level parameters. */
export interface Request extends Document {
  /** Command name, e.g. `ping` or `admin_get_domains`. */
  command: string;
  /** Client-chosen id echoed in the response. */
  requestID?: RequestId;
}

/** A response to one request. */
export interface Response extends Document {
  /** The command answered. */
  command: string;
  /** The request's `requestID`, exactly as sent (absent if it had none). */
  requestID?: RequestId;
  /** 0 on success, otherwise an error code. */
  error: number;
  /** Human-readable explanation when `error` is not 0. */
  message?: string;
  /** The result. */
  data?: unknown;
}

/** A server push, never carrying a requestID. */
export interface Push extends Document {
  /** Event name. */
  event: string;
  /** The module that emitted it, absent for core events. */
  module?: string;
  /** The user the push is for (a session may act for several users). */
  account?: string;
  /** Event payload. */
  data: unknown;
}

/** A frame whose bytes are not a valid BSON document. */
export class MalformedDocumentError extends Error {
  /** Stable error code. */
  readonly code = "malformed_document";

  /** Create the error with a short reason. */
  constructor(reason: string) {
    super(`malformed BSON document: ${reason}`);
    this.name = "MalformedDocumentError";
  }
}

/**
 * Decode one frame into a document.
 *
 * Binary values come back as `Uint8Array` (only subtype 0, generic, is
 * accepted); 64-bit integers as numbers when they fit.
 *
 * @throws {MalformedDocumentError} on any invalid byte sequence, with a
 * reason in protocol terms (never the BSON library's own words)
 */
export function decodeDocument(frame: Uint8Array): Document {
  checkEnvelope(frame);
  let doc: Document;
  try {
    doc = BSON.deserialize(frame, {
      promoteBuffers: false,
      validation: { utf8: true },
    });
  } catch (error) {
    throw new MalformedDocumentError(
      bsonReason(error instanceof Error ? error.message : String(error)),
    );
  }
  return ownBinaries(doc) as Document;
}

/** The checks of a document's frame that need no parsing. */
function checkEnvelope(frame: Uint8Array): void {
  if (frame.byteLength < 5) {
    throw new MalformedDocumentError(
      `a document is at least 5 bytes, this one has ${frame.byteLength}`,
    );
  }
  const declared = frame[0] | (frame[1] << 8) | (frame[2] << 16) |
    (frame[3] << 24);
  if (declared !== frame.byteLength) {
    throw new MalformedDocumentError(
      `the length field says ${declared} bytes, the frame has ${frame.byteLength}`,
    );
  }
  if (frame[frame.byteLength - 1] !== 0) {
    throw new MalformedDocumentError(
      "the document does not end with a zero byte",
    );
  }
}

/** A protocol-level reason for a BSON parsing failure. */
function bsonReason(message: string): string {
  const rules: [RegExp, string][] = [
    [/utf-?8/i, "a string or name is not valid UTF-8"],
    [
      /unknown bson type|detected unknown/i,
      "an element has an unknown type byte",
    ],
    [
      /not null terminated|null term|terminat/i,
      "a name or string is not terminated by a zero byte",
    ],
    [/duplicate|illegal|invalid .*key|\$/i, "an element name is not allowed"],
    [
      /bad string length|string length/i,
      "a string's length field does not fit its bytes",
    ],
    [
      /size|length|bounds|overrun|corrupt|eoo|end of/i,
      "an element's length runs past its document",
    ],
  ];
  for (const [pattern, reason] of rules) {
    if (pattern.test(message)) return reason;
  }
  return "the bytes are not a valid BSON document";
}

/**
 * Replace binary values by `Uint8Array`s with buffers of their own: a view
 * keeps the whole frame alive and is stored whole by structured clone (Deno
 * KV would store every byte of the frame). Only subtype 0 is binary data in
 * AMTP: any other subtype makes the document malformed.
 */
function ownBinaries(value: unknown): unknown {
  if (value instanceof Binary) {
    if (value.sub_type !== 0) {
      throw new MalformedDocumentError(
        `binary subtype ${value.sub_type}: AMTP binary values are subtype 0`,
      );
    }
    const bytes = value.buffer.subarray(0, value.position);
    return bytes.byteLength === bytes.buffer.byteLength
      ? new Uint8Array(bytes.buffer)
      : new Uint8Array(bytes);
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = ownBinaries(value[i]);
    return value;
  }
  if (
    value !== null && typeof value === "object" && !(value instanceof Date) &&
    !("_bsontype" in value)
  ) {
    const record = value as Record<string, unknown>;
    for (const key of Object.keys(record)) {
      record[key] = ownBinaries(record[key]);
    }
  }
  return value;
}

/** Encode a document into one frame. */
export function encodeDocument(doc: Document): Uint8Array {
  return BSON.serialize(doc);
}

/**
 * Is `value` usable as a requestID: a string of at most 128 characters, a
 * finite number, or an int32, int64 or finite double read by
 * {@link exactRequestId}?
 */
export function isRequestId(value: unknown): value is RequestId {
  if (typeof value === "string") return value.length <= 128;
  if (typeof value === "number") return Number.isFinite(value);
  if (value instanceof Int32 || value instanceof Long) return true;
  return value instanceof Double && Number.isFinite(value.value);
}

const REQUEST_ID = [...new TextEncoder().encode("requestID")];

/** Value sizes of the fixed-size BSON element types. */
const SCALAR_SIZES: Record<number, number> = {
  0x01: 8, // double
  0x08: 1, // boolean
  0x09: 8, // UTC datetime
  0x10: 4, // int32
  0x11: 8, // timestamp
  0x12: 8, // int64
  0x07: 12, // ObjectId
  0x13: 16, // decimal128
  0x06: 0, // undefined
  0x0a: 0, // null
  0x7f: 0, // max key
  0xff: 0, // min key
};

/**
 * The top-level `requestID` of a frame with its exact BSON type: a number
 * element as `Int32`, `Long` or `Double`, so that encoding the response
 * writes back the same type and value (an int64 of 2^40 stays an int64, one
 * beyond 2^53 keeps every bit). Undefined when the frame has no numeric
 * `requestID` (a string needs no wrapper). Call it on a frame that
 * {@link decodeDocument} accepted; the last of duplicate names wins, as in
 * decoding.
 */
export function exactRequestId(
  frame: Uint8Array,
): Int32 | Long | Double | undefined {
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  let found: Int32 | Long | Double | undefined;
  let at = 4;
  const end = frame.byteLength - 1;
  while (at < end) {
    const type = frame[at++];
    const nameStart = at;
    while (at < end && frame[at] !== 0) at++;
    const isId = at - nameStart === REQUEST_ID.length &&
      REQUEST_ID.every((byte, i) => frame[nameStart + i] === byte);
    at++;
    if (isId) {
      if (type === 0x10) found = new Int32(view.getInt32(at, true));
      else if (type === 0x12) {
        found = Long.fromBits(
          view.getInt32(at, true),
          view.getInt32(at + 4, true),
        );
      } else if (type === 0x01) found = new Double(view.getFloat64(at, true));
      else found = undefined;
    }
    const size = SCALAR_SIZES[type];
    if (size !== undefined) at += size;
    else if (type === 0x02 || type === 0x0d || type === 0x0e) {
      at += 4 + view.getInt32(at, true);
    } else if (type === 0x03 || type === 0x04 || type === 0x0f) {
      at += view.getInt32(at, true);
    } else if (type === 0x05) at += 5 + view.getInt32(at, true);
    else if (type === 0x0c) at += 4 + view.getInt32(at, true) + 12;
    else if (type === 0x0b) {
      for (let i = 0; i < 2; i++) {
        while (at < end && frame[at] !== 0) at++;
        at++;
      }
    } else return undefined;
  }
  return found;
}
