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

import { BSON } from "bson";

/** A decoded BSON document. */
export type Document = Record<string, unknown>;

/** A request as it arrives: the command name plus top-level parameters. */
export interface Request extends Document {
  /** Command name, e.g. `ping` or `admin_get_domains`. */
  command: string;
  /** Client-chosen id echoed in the response; string or number. */
  requestID?: string | number;
}

/** A response to one request. */
export interface Response extends Document {
  /** The command answered. */
  command: string;
  /** The request's `requestID`, exactly as sent (absent if it had none). */
  requestID?: string | number;
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
 * Binary values come back as `Uint8Array`; 64-bit integers as numbers when
 * they fit.
 *
 * @throws {MalformedDocumentError} on any invalid byte sequence
 */
export function decodeDocument(frame: Uint8Array): Document {
  try {
    const doc = BSON.deserialize(frame, {
      promoteBuffers: true,
      validation: { utf8: true },
    });
    return ownBinaries(doc) as Document;
  } catch (error) {
    const reason = error instanceof Error ? error.message : String(error);
    throw new MalformedDocumentError(reason.slice(0, 200));
  }
}

/**
 * Replace binary values that are views into the frame by copies of their own:
 * a view keeps the whole frame alive and is stored whole by structured clone
 * (Deno KV would store every byte of the frame).
 */
function ownBinaries(value: unknown): unknown {
  if (value instanceof Uint8Array) {
    return value.byteLength === value.buffer.byteLength
      ? value
      : new Uint8Array(value);
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) value[i] = ownBinaries(value[i]);
    return value;
  }
  if (value !== null && typeof value === "object" && !(value instanceof Date)) {
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

/** Is `value` usable as a requestID (a string of at most 128 characters or a finite number)? */
export function isRequestId(value: unknown): value is string | number {
  return (typeof value === "string" && value.length <= 128) ||
    (typeof value === "number" && Number.isFinite(value));
}
