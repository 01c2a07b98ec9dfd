/**
 * WebSocket (RFC 6455) sessions at `/amtp` on a TLS connection the TCP
 * listener owns. One binary message is one frame (BSON document); text
 * messages are refused.
 *
 * Framing is the npm `ws` package's `Receiver` and `Sender`, used as a codec
 * over the byte stream: a message over the frame limit is refused from its
 * frame header, before its payload is buffered, and a fragmented message is
 * bounded in total. Reading is pulled by the session (nothing is read while
 * the session does not ask for a frame) and every write is awaited until the
 * bytes are written, so a peer that does not read stops being read from.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { Receiver, Sender } from "ws";
import { concatBytes, FrameError } from "../wire/mod.ts";
import type { Connection } from "./connection.ts";
import { newConnectionId } from "./connection.ts";
import { HttpError, type RequestHead } from "./http.ts";

/** The GUID of RFC 6455 section 1.3. */
const WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/** Fragments of one message, at most. */
const MAX_FRAGMENTS = 1024;
/**
 * Frames larger than this (64 KiB) are transfers: written one at a time,
 * after the smaller frames queued meanwhile.
 */
export const BULK_ABOVE = 64 * 1024;
/** How long a close frame may take to leave before the TCP connection is closed. */
const CLOSE_WAIT_MS = 1000;

/** The byte stream a session runs on (a TLS connection). */
export interface ByteStream {
  /** The next chunk, or null at the end. */
  read(): Promise<Uint8Array | null>;
  /** Write all of `bytes`; resolves when they are written. */
  write(bytes: Uint8Array): Promise<void>;
  /** Close at once. */
  close(): void;
  /** Resolves once closed, from either side. */
  readonly closed: Promise<void>;
}

/** The part of `ws`'s Receiver used here (the package has no types of it). */
interface FrameReceiver {
  write(chunk: Uint8Array): boolean;
  readonly errored: (Error & { code?: string }) | null;
  on(event: "message", fn: (data: Uint8Array, isBinary: boolean) => void): void;
  on(event: "ping" | "pong", fn: (data: Uint8Array) => void): void;
  on(event: "conclude", fn: (code: number, reason: Uint8Array) => void): void;
  on(event: "error", fn: (error: Error) => void): void;
}

/** `ws`'s static frame builder. */
const frameOf = (data: Uint8Array, opcode: number): Uint8Array[] =>
  (Sender as unknown as {
    frame(data: Uint8Array, options: Record<string, unknown>): Uint8Array[];
  }).frame(data, { fin: true, opcode, mask: false, readOnly: false });

/** True when a request head asks for a WebSocket upgrade. */
export function isUpgrade(head: RequestHead): boolean {
  return tokens(head.headers.get("upgrade")).includes("websocket");
}

function tokens(value: string | null): string[] {
  return (value ?? "").toLowerCase().split(",").map((t) => t.trim());
}

/**
 * Check an upgrade request (RFC 6455 section 4.2.1) and return the head of
 * the 101 answer.
 *
 * @throws {HttpError} 400 for a malformed upgrade, 426 for another version
 */
export function upgradeAnswer(head: RequestHead): string {
  if (head.method !== "GET" || head.version !== "HTTP/1.1") {
    throw new HttpError(400, "a WebSocket upgrade is a GET over HTTP/1.1");
  }
  if (!tokens(head.headers.get("connection")).includes("upgrade")) {
    throw new HttpError(400, "Connection: Upgrade missing");
  }
  if (head.headers.get("sec-websocket-version") !== "13") {
    throw new HttpError(426, "WebSocket version 13 required");
  }
  const key = head.headers.get("sec-websocket-key") ?? "";
  if (!/^[A-Za-z0-9+/]{22}==$/.test(key)) {
    throw new HttpError(400, "malformed Sec-WebSocket-Key");
  }
  const accept = createHash("sha1").update(key + WS_GUID).digest("base64");
  return "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n" +
    `connection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`;
}

/** A WebSocket session on an upgraded TLS connection. */
export class WebSocketConnection implements Connection {
  readonly id = newConnectionId("ws");
  readonly transport = "websocket" as const;
  readonly remoteAddr: string;
  readonly closed: Promise<void>;
  readonly #stream: ByteStream;
  readonly #receiver: FrameReceiver;
  readonly #frames: Uint8Array[] = [];
  #error?: FrameError;
  #ended = false;
  #closing = false;
  #isClosed = false;
  #resolveClosed!: () => void;
  #early?: Uint8Array;
  /** Frames waiting to be written: small ones, and transfers (see {@link send}). */
  readonly #small: Queued[] = [];
  readonly #bulk: Queued[] = [];
  #writing = false;

  /**
   * Wrap an upgraded connection; `early` holds bytes that came with the
   * request head.
   */
  constructor(
    stream: ByteStream,
    options: { ip: string; maxFrame: number; early?: Uint8Array },
  ) {
    this.#stream = stream;
    stream.closed.then(() => this.#shutdown());
    this.remoteAddr = options.ip;
    this.#early = options.early?.length ? options.early : undefined;
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
    const receiver = new (Receiver as unknown as new (
      options: Record<string, unknown>,
    ) => FrameReceiver)({
      isServer: true,
      maxPayload: options.maxFrame,
      maxFragments: MAX_FRAGMENTS,
      // A frame trickled in tiny TLS records must not cost an object per
      // byte: at least about 1 KiB per buffered chunk on average.
      maxBufferedChunks: Math.ceil(options.maxFrame / 1024) + 64,
      skipUTF8Validation: true,
    });
    receiver.on("message", (data, isBinary) => {
      if (isBinary) {
        this.#frames.push(data);
      } else {
        this.#fail(
          new FrameError(
            "frame_malformed",
            "text messages are not allowed; send BSON in binary messages",
          ),
        );
      }
    });
    receiver.on("ping", (data) => {
      this.#write(frameOf(data, 0x0a)).catch(() => {});
    });
    receiver.on("conclude", () => {
      // The peer's close: no more frames. The session answers what it has
      // read, then closes, which sends our close frame (RFC 6455 5.5.1).
      this.#ended = true;
    });
    // Errors are read from `errored` right after each write.
    receiver.on("error", () => {});
    this.#receiver = receiver;
  }

  async *frames(): AsyncIterable<Uint8Array> {
    while (true) {
      const frame = this.#frames.shift();
      if (frame) {
        yield frame;
        continue;
      }
      if (this.#error) throw this.#error;
      if (this.#ended || this.#isClosed) return;
      await this.#readMore();
    }
  }

  /** Read one chunk and feed it to the decoder (only when a frame is wanted). */
  async #readMore(): Promise<void> {
    let chunk = this.#early;
    this.#early = undefined;
    chunk ??= await this.#stream.read().catch(() => null) ?? undefined;
    if (!chunk) {
      this.#ended = true;
      return;
    }
    this.#receiver.write(chunk);
    const error = this.#receiver.errored;
    if (error && !this.#error) {
      this.#fail(
        error.code === "WS_ERR_UNSUPPORTED_MESSAGE_LENGTH"
          ? new FrameError(
            "frame_too_large",
            `message exceeds the frame limit: ${error.message}`,
          )
          : new FrameError("frame_malformed", error.message),
      );
    }
  }

  #fail(error: FrameError): void {
    this.#error ??= error;
    this.#ended = true;
  }

  /**
   * Queue a frame. Frames of at most {@link BULK_ABOVE} bytes (answers to
   * commands, pushes) go out before larger ones (transfer chunks) not yet
   * begun: over the one connection a command waits behind at most the one
   * chunk being written. Each kind keeps its order.
   */
  send(frame: Uint8Array): Promise<void> {
    if (this.#closing) return Promise.resolve();
    return this.#write(frameOf(frame, 0x02), frame.byteLength > BULK_ABOVE);
  }

  /** Queue a frame's parts; the promise settles once they are written. */
  #write(parts: Uint8Array[], bulk = false): Promise<void> {
    if (this.#isClosed) return Promise.resolve();
    return new Promise((resolve) => {
      (bulk ? this.#bulk : this.#small).push({ parts, resolve });
      if (!this.#writing) this.#pump();
    });
  }

  /**
   * Write until both queues are empty: every small frame queued (in one
   * write when they are small together), else the next transfer, one at a
   * time.
   */
  async #pump(): Promise<void> {
    this.#writing = true;
    // Frames queued in the same turn go out together.
    await Promise.resolve();
    try {
      while (!this.#isClosed) {
        const next = this.#small.length
          ? this.#small.splice(0)
          : this.#bulk.splice(0, 1);
        if (next.length === 0) break;
        try {
          // Large frames go as they are; small ones together (one TLS record).
          for (const group of groupParts(next.flatMap((q) => q.parts))) {
            await this.#stream.write(group);
          }
        } catch {
          this.#shutdown();
        }
        for (const queued of next) queued.resolve();
      }
    } finally {
      this.#writing = false;
      if (this.#isClosed) this.#release();
    }
  }

  /** Settle every queued write (the connection is closed: nothing is sent). */
  #release(): void {
    for (const queued of this.#small.splice(0)) queued.resolve();
    for (const queued of this.#bulk.splice(0)) queued.resolve();
  }

  close(reason = "closed"): void {
    this.#closeWith(1000, reason);
  }

  /** Send a close frame, then close the TCP connection once it left. */
  #closeWith(code: number, reason: string): void {
    if (this.#closing) return;
    this.#closing = true;
    // A close reason is at most 123 bytes; ours are ASCII.
    const text = new TextEncoder().encode(reason.replace(/[^\x20-\x7e]/g, ""))
      .subarray(0, 120);
    const payload = new Uint8Array(2 + text.length);
    new DataView(payload.buffer).setUint16(0, code);
    payload.set(text, 2);
    let timer: ReturnType<typeof setTimeout> | undefined;
    Promise.race([
      // After what is queued, transfers included.
      this.#write(frameOf(payload, 0x08), true),
      new Promise((resolve) => timer = setTimeout(resolve, CLOSE_WAIT_MS)),
    ]).finally(() => {
      clearTimeout(timer);
      this.#shutdown();
    });
  }

  #shutdown(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#ended = true;
    this.#stream.close();
    if (!this.#writing) this.#release();
    this.#resolveClosed();
  }
}

/** A frame waiting to be written. */
interface Queued {
  parts: Uint8Array[];
  resolve: () => void;
}

/** Consecutive parts below 64 KiB joined; larger parts alone (no copy). */
function groupParts(parts: Uint8Array[]): Uint8Array[] {
  const groups: Uint8Array[] = [];
  let small: Uint8Array[] = [];
  let smallBytes = 0;
  const flush = () => {
    if (small.length) {
      groups.push(small.length === 1 ? small[0] : concatBytes(...small));
    }
    small = [];
    smallBytes = 0;
  };
  for (const part of parts) {
    if (part.length >= 64 * 1024) {
      flush();
      groups.push(part);
      continue;
    }
    if (smallBytes + part.length > 64 * 1024) flush();
    small.push(part);
    smallBytes += part.length;
  }
  flush();
  return groups;
}
