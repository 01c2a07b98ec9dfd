/**
 * A small HTTPS client that connects to an address found (and checked) by
 * the caller and verifies the certificate for the host name. Deno's `fetch`
 * resolves names with the system resolver only, and resolves them again
 * after any check: a server configured with its own name server
 * (`AMTP_DNS`) must use the same answers for delivery policies as for
 * everything else in federation, and Web Push must connect to exactly the
 * address it checked is public (no DNS rebinding in between).
 *
 * HTTP/1.1, `Connection: close`, one request per connection; bodies with
 * `Content-Length`, chunked or until close, bounded in size.
 *
 * @module
 */

/** An HTTPS response. */
export interface HttpsResponse {
  /** Status code. */
  status: number;
  /** Header values by lowercase name (the last one wins). */
  headers: Map<string, string>;
  /** The body. */
  body: Uint8Array;
}

/** A fetch that failed: no answer, a broken answer, or one too large. */
export class HttpsError extends Error {
  /** Create the error. */
  constructor(message: string) {
    super(message);
    this.name = "HttpsError";
  }
}

/** Options of {@link httpsGet} and {@link httpsRequest}. */
export interface HttpsGetOptions {
  /** IP addresses of the host, tried in order. */
  addresses: string[];
  /** Port. */
  port: number;
  /** Extra root certificates (PEM). */
  caCerts?: string[];
  /** Milliseconds for the whole request. */
  timeoutMs: number;
  /** Largest body accepted. */
  maxBytes: number;
}

const HEAD_LIMIT = 16 * 1024;

function indexOf(bytes: Uint8Array, needle: number[], from = 0): number {
  outer: for (let i = from; i <= bytes.length - needle.length; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (bytes[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}

function decodeChunked(data: Uint8Array, maxBytes: number): Uint8Array {
  const parts: Uint8Array[] = [];
  let at = 0;
  let total = 0;
  while (true) {
    const end = indexOf(data, [13, 10], at);
    if (end < 0) throw new HttpsError("a chunked body ends early");
    const size = parseInt(
      new TextDecoder().decode(data.subarray(at, end)).split(";")[0].trim(),
      16,
    );
    if (!Number.isFinite(size) || size < 0) {
      throw new HttpsError("a chunk size is not a number");
    }
    at = end + 2;
    if (size === 0) break;
    total += size;
    if (total > maxBytes) throw new HttpsError("the body is too large");
    if (at + size > data.length) throw new HttpsError("a chunk ends early");
    parts.push(data.subarray(at, at + size));
    at += size + 2;
  }
  const out = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

/** A request: its method, header fields and body (GET: none). */
export interface HttpsRequest {
  /** `GET` or `POST`. */
  method: "GET" | "POST";
  /** Header fields besides Host, User-Agent, Connection and Content-Length. */
  headers: Record<string, string>;
  /** The body (POST). */
  body?: Uint8Array;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await conn.write(bytes.subarray(at));
}

async function once(
  address: string,
  host: string,
  path: string,
  options: HttpsGetOptions,
  signal: AbortSignal,
  request: HttpsRequest,
): Promise<HttpsResponse> {
  const tcp = await Deno.connect({ hostname: address, port: options.port });
  const abort = () => {
    try {
      tcp.close();
    } catch { /* closed */ }
  };
  signal.addEventListener("abort", abort, { once: true });
  try {
    const conn = await Deno.startTls(tcp, {
      hostname: host,
      caCerts: options.caCerts?.length ? options.caCerts : undefined,
    });
    try {
      const fields = Object.entries(request.headers).map(([name, value]) =>
        `${name}: ${value}\r\n`
      ).join("");
      const length = request.body
        ? `Content-Length: ${request.body.byteLength}\r\n`
        : "";
      await writeAll(
        conn,
        new TextEncoder().encode(
          `${request.method} ${path} HTTP/1.1\r\nHost: ${host}\r\n${fields}${length}` +
            `User-Agent: amtp-deno\r\nConnection: close\r\n\r\n`,
        ),
      );
      if (request.body) await writeAll(conn, request.body);
      const limit = HEAD_LIMIT + options.maxBytes + 64 * 1024;
      const chunks: Uint8Array[] = [];
      let size = 0;
      const buffer = new Uint8Array(16 * 1024);
      while (true) {
        const n = await conn.read(buffer).catch(() => null);
        if (n === null) break;
        chunks.push(buffer.slice(0, n));
        size += n;
        if (size > limit) throw new HttpsError("the answer is too large");
      }
      const data = new Uint8Array(size);
      let offset = 0;
      for (const chunk of chunks) {
        data.set(chunk, offset);
        offset += chunk.length;
      }
      const headEnd = indexOf(data, [13, 10, 13, 10]);
      if (headEnd < 0 || headEnd > HEAD_LIMIT) {
        throw new HttpsError("no HTTP answer");
      }
      const lines = new TextDecoder().decode(data.subarray(0, headEnd)).split(
        "\r\n",
      );
      const status = lines[0].match(/^HTTP\/1\.[01] (\d{3})/);
      if (!status) throw new HttpsError(`not an HTTP status line: ${lines[0]}`);
      const headers = new Map<string, string>();
      for (const line of lines.slice(1)) {
        const colon = line.indexOf(":");
        if (colon > 0) {
          headers.set(
            line.slice(0, colon).trim().toLowerCase(),
            line.slice(colon + 1).trim(),
          );
        }
      }
      let body: Uint8Array = data.subarray(headEnd + 4);
      if (headers.get("transfer-encoding")?.toLowerCase() === "chunked") {
        body = decodeChunked(body, options.maxBytes);
      } else if (headers.has("content-length")) {
        const length = Number(headers.get("content-length"));
        if (!Number.isInteger(length) || length < 0 || length > body.length) {
          throw new HttpsError("the body is shorter than its Content-Length");
        }
        body = body.subarray(0, length);
      }
      if (body.length > options.maxBytes) {
        throw new HttpsError("the body is too large");
      }
      return { status: Number(status[1]), headers, body: body.slice() };
    } finally {
      try {
        conn.close();
      } catch { /* closed */ }
    }
  } finally {
    signal.removeEventListener("abort", abort);
    abort();
  }
}

/**
 * GET `https://host:port/path`, connecting to the given addresses.
 *
 * @throws {HttpsError} when no address answers within the time limit
 */
export function httpsGet(
  host: string,
  path: string,
  options: HttpsGetOptions,
): Promise<HttpsResponse> {
  return httpsRequest(host, path, options, {
    method: "GET",
    headers: { Accept: "application/json" },
  });
}

/**
 * Send `request` to `https://host:port/path`, connecting to the given
 * addresses in order until one answers.
 *
 * @throws {HttpsError} when no address answers within the time limit
 */
export async function httpsRequest(
  host: string,
  path: string,
  options: HttpsGetOptions,
  request: HttpsRequest,
): Promise<HttpsResponse> {
  const signal = AbortSignal.timeout(options.timeoutMs);
  const errors: string[] = [];
  for (const address of options.addresses) {
    if (signal.aborted) break;
    try {
      return await Promise.race([
        once(address, host, path, options, signal, request),
        new Promise<never>((_, reject) =>
          signal.addEventListener(
            "abort",
            () => reject(new HttpsError("timed out")),
            { once: true },
          )
        ),
      ]);
    } catch (error) {
      errors.push(`${address}: ${(error as Error).message}`);
    }
  }
  throw new HttpsError(
    `https://${host}:${options.port}${path}: ${
      errors.join("; ") || "timed out"
    }`,
  );
}
