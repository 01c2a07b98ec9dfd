/**
 * A small HTTP/1.1 server side for one request per connection: read a request
 * head within a size limit, read a bounded body, write a `Response` with
 * `Connection: close`. The TCP listener uses it for WebSocket upgrades and for
 * the plain HTTPS pages of the `httpHandler` hook.
 *
 * @module
 */

import { concatBytes } from "../wire/mod.ts";

/** Largest request head (request line and headers) in bytes. */
export const MAX_HEAD_BYTES = 8 * 1024;
/** Largest request body handed to the HTTP handler, in bytes. */
export const MAX_BODY_BYTES = 64 * 1024;

/** A request that cannot be served; answered with `status` and closed. */
export class HttpError extends Error {
  /** HTTP status code of the answer. */
  readonly status: number;

  /** Create an error answered with `status`. */
  constructor(status: number, message: string) {
    super(message);
    this.name = "HttpError";
    this.status = status;
  }
}

/** A parsed request head. */
export interface RequestHead {
  /** Method, as sent (methods are case-sensitive). */
  method: string;
  /** Request target (origin form `/path?query`, or absolute form). */
  target: string;
  /** `HTTP/1.1` or `HTTP/1.0`. */
  version: string;
  /** Header fields; repeated fields joined with `, `. */
  headers: Headers;
}

/** Bytes read from a connection that belong after the head (body, frames). */
export interface HeadRead {
  /** The head. */
  head: RequestHead;
  /** Bytes received after the blank line that ends the head. */
  rest: Uint8Array;
}

/** A byte stream read chunk by chunk (a TLS connection). */
export interface ChunkReader {
  /** The next chunk, or null at the end. */
  read(): Promise<Uint8Array | null>;
}

/** A byte stream written in whole (a TLS connection). */
export interface ByteWriter {
  /** Write all of `bytes`; resolves when they are written. */
  write(bytes: Uint8Array): Promise<void>;
}

const CRLFCRLF = [13, 10, 13, 10];
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const decoder = new TextDecoder("latin1");
const encoder = new TextEncoder();

/**
 * Read a request head of at most {@link MAX_HEAD_BYTES}.
 *
 * @returns the head and the bytes after it, or null when the peer closed
 *   before sending anything
 * @throws {HttpError} 431 when the head is too large, 400 when it is malformed
 */
export async function readHead(
  stream: ChunkReader,
  maxHead = MAX_HEAD_BYTES,
): Promise<HeadRead | null> {
  let buffered: Uint8Array = new Uint8Array(0);
  while (true) {
    const chunk = await stream.read();
    if (chunk === null) {
      if (buffered.length === 0) return null;
      throw new HttpError(400, "connection closed inside the request head");
    }
    const searchFrom = Math.max(0, buffered.length - 3);
    buffered = concatBytes(buffered, chunk);
    const end = indexOf(buffered, CRLFCRLF, searchFrom, buffered.length);
    if (end >= 0) {
      if (end + 4 > maxHead) {
        throw new HttpError(431, "request head too large");
      }
      return {
        head: parseHead(decoder.decode(buffered.subarray(0, end))),
        rest: buffered.slice(end + 4),
      };
    }
    if (buffered.length >= maxHead) {
      throw new HttpError(431, "request head too large");
    }
  }
}

function indexOf(
  bytes: Uint8Array,
  needle: number[],
  from: number,
  to: number,
): number {
  outer: for (let i = from; i + needle.length <= to; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (bytes[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}

/**
 * Parse a request head (without its final blank line).
 *
 * @throws {HttpError} 400 for a malformed head, 505 for another HTTP version
 */
export function parseHead(text: string): RequestHead {
  const lines = text.split("\r\n");
  const requestLine = lines[0].split(" ");
  if (requestLine.length !== 3 || !TOKEN.test(requestLine[0])) {
    throw new HttpError(400, "malformed request line");
  }
  const [method, target, version] = requestLine;
  if (!/^HTTP\/\d\.\d$/.test(version)) {
    throw new HttpError(400, "malformed request line");
  }
  if (version !== "HTTP/1.1" && version !== "HTTP/1.0") {
    throw new HttpError(505, "HTTP version not supported");
  }
  if (!/^[\x21-\x7e]+$/.test(target)) {
    throw new HttpError(400, "malformed request target");
  }
  const headers = new Headers();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    const name = colon > 0 ? line.slice(0, colon) : "";
    // No space before the colon, no folded lines (RFC 9112 5.1, 5.2).
    if (!TOKEN.test(name)) throw new HttpError(400, "malformed header field");
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    // deno-lint-ignore no-control-regex
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value)) {
      throw new HttpError(400, "malformed header field");
    }
    try {
      headers.append(name, value);
    } catch {
      throw new HttpError(400, "malformed header field");
    }
  }
  if (version === "HTTP/1.1" && !headers.has("host")) {
    throw new HttpError(400, "missing Host header");
  }
  return { method, target, version, headers };
}

/**
 * Read the request body announced by the head, at most `maxBody` bytes
 * (`Content-Length` or chunked), starting with the bytes already read.
 *
 * @throws {HttpError} 413 over the limit, 400 when malformed, 501 for an
 *   unknown transfer coding
 */
export async function readBody(
  conn: ChunkReader,
  head: RequestHead,
  rest: Uint8Array,
  maxBody = MAX_BODY_BYTES,
): Promise<Uint8Array> {
  const coding = head.headers.get("transfer-encoding");
  const length = head.headers.get("content-length");
  if (coding !== null) {
    if (length !== null) {
      throw new HttpError(400, "both Content-Length and Transfer-Encoding");
    }
    if (coding.trim().toLowerCase() !== "chunked") {
      throw new HttpError(501, "transfer coding not supported");
    }
    return await readChunked(new Source(conn, rest), maxBody);
  }
  if (length === null) return new Uint8Array(0);
  if (!/^\d{1,15}$/.test(length)) {
    throw new HttpError(400, "malformed Content-Length");
  }
  const size = Number(length);
  if (size > maxBody) throw new HttpError(413, "request body too large");
  return await new Source(conn, rest).take(size);
}

/** Buffered reads over a connection, starting with bytes already read. */
class Source {
  #buffer: Uint8Array;
  readonly #stream: ChunkReader;

  constructor(stream: ChunkReader, rest: Uint8Array) {
    this.#stream = stream;
    this.#buffer = rest;
  }

  async #fill(): Promise<void> {
    const chunk = await this.#stream.read();
    if (chunk === null) {
      throw new HttpError(400, "connection closed in the body");
    }
    this.#buffer = concatBytes(this.#buffer, chunk);
  }

  async take(size: number): Promise<Uint8Array> {
    while (this.#buffer.length < size) await this.#fill();
    const out = this.#buffer.slice(0, size);
    this.#buffer = this.#buffer.subarray(size);
    return out;
  }

  /** A CRLF-terminated line of at most `max` bytes, without the CRLF. */
  async line(max: number): Promise<string> {
    while (true) {
      const end = indexOf(this.#buffer, [13, 10], 0, this.#buffer.length);
      if (end >= 0) {
        const text = decoder.decode(this.#buffer.subarray(0, end));
        this.#buffer = this.#buffer.subarray(end + 2);
        return text;
      }
      if (this.#buffer.length > max) {
        throw new HttpError(400, "malformed chunked body");
      }
      await this.#fill();
    }
  }
}

async function readChunked(
  source: Source,
  maxBody: number,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let total = 0;
  while (true) {
    const sizeLine = (await source.line(1024)).split(";")[0].trim();
    if (!/^[0-9a-fA-F]{1,8}$/.test(sizeLine)) {
      throw new HttpError(400, "malformed chunk size");
    }
    const size = parseInt(sizeLine, 16);
    if (size === 0) break;
    total += size;
    if (total > maxBody) throw new HttpError(413, "request body too large");
    parts.push(await source.take(size));
    if ((await source.take(2)).some((b, i) => b !== [13, 10][i])) {
      throw new HttpError(400, "malformed chunked body");
    }
  }
  // Trailer fields, ignored, up to the blank line.
  let trailers = 0;
  while ((await source.line(1024)) !== "") {
    if (++trailers > 32) throw new HttpError(400, "too many trailer fields");
  }
  const body = new Uint8Array(total);
  let at = 0;
  for (const part of parts) {
    body.set(part, at);
    at += part.length;
  }
  return body;
}

const REASONS: Record<number, string> = {
  200: "OK",
  201: "Created",
  204: "No Content",
  206: "Partial Content",
  301: "Moved Permanently",
  302: "Found",
  304: "Not Modified",
  307: "Temporary Redirect",
  308: "Permanent Redirect",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  408: "Request Timeout",
  411: "Length Required",
  413: "Content Too Large",
  426: "Upgrade Required",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
  505: "HTTP Version Not Supported",
};

/** Headers the responder sets itself (framing and connection handling). */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "transfer-encoding",
  "upgrade",
  "proxy-connection",
]);

/**
 * Write `response` as HTTP/1.1 with `Connection: close`. Without a
 * `Content-Length` the body goes chunked (close-delimited to an HTTP/1.0
 * client); a HEAD request, 1xx, 204 and 304 get no body.
 */
export async function writeResponse(
  conn: ByteWriter,
  response: Response,
  options: { method: string; version?: string },
): Promise<void> {
  const status = response.status;
  const noBody = options.method === "HEAD" || status === 204 ||
    status === 304 || status < 200;
  const lines = [`HTTP/1.1 ${status} ${REASONS[status] ?? "Status"}`];
  let hasLength = false;
  for (const [name, value] of response.headers) {
    if (HOP_BY_HOP.has(name)) continue;
    if (name === "set-cookie") continue;
    if (name === "content-length") hasLength = true;
    lines.push(`${name}: ${value}`);
  }
  for (const cookie of response.headers.getSetCookie()) {
    lines.push(`set-cookie: ${cookie}`);
  }
  if (!response.headers.has("date")) {
    lines.push(`date: ${new Date().toUTCString()}`);
  }
  const chunked = !noBody && !hasLength && options.version !== "HTTP/1.0";
  if (chunked) lines.push("transfer-encoding: chunked");
  lines.push("connection: close", "", "");
  await conn.write(encoder.encode(lines.join("\r\n")));
  if (noBody || !response.body) {
    await response.body?.cancel();
    if (chunked) await conn.write(encoder.encode("0\r\n\r\n"));
    return;
  }
  for await (const chunk of response.body) {
    if (chunk.length === 0) continue;
    if (chunked) {
      await conn.write(encoder.encode(`${chunk.length.toString(16)}\r\n`));
      await conn.write(chunk);
      await conn.write(encoder.encode("\r\n"));
    } else {
      await conn.write(chunk);
    }
  }
  if (chunked) await conn.write(encoder.encode("0\r\n\r\n"));
}

/** A plain-text response of `status` for refusals and errors. */
export function textResponse(
  status: number,
  text: string,
  headers: Record<string, string> = {},
): Response {
  return new Response(`${text}\n`, {
    status,
    headers: { "content-type": "text/plain; charset=utf-8", ...headers },
  });
}

/**
 * The `Request` a handler sees: `https://` + Host + target, with the head's
 * headers and the body (none for GET and HEAD).
 *
 * @throws {HttpError} 400 when the target or Host does not form a URL
 */
export function toRequest(
  head: RequestHead,
  body: Uint8Array,
  fallbackHost: string,
): Request {
  const host = head.headers.get("host") || fallbackHost;
  let url: URL;
  try {
    url = head.target.startsWith("/")
      ? new URL(`https://${host}${head.target}`)
      : new URL(head.target);
  } catch {
    throw new HttpError(400, "malformed request target or Host");
  }
  const hasBody = head.method !== "GET" && head.method !== "HEAD";
  try {
    return new Request(url, {
      method: head.method,
      headers: head.headers,
      body: hasBody ? body as Uint8Array<ArrayBuffer> : undefined,
    });
  } catch {
    // CONNECT, TRACE and TRACK are forbidden methods of the Fetch API.
    throw new HttpError(405, "method not allowed");
  }
}
