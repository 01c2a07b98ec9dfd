/**
 * Client side of the two transports, producing whole frames. Runs in Deno
 * and in browsers (WebTransport and WebSocket are web APIs).
 *
 * @module
 */

import { FrameDecoder } from "../core/wire/mod.ts";

/** A client connection carrying frames. */
export interface ClientTransport {
  /** Send one frame. */
  send(frame: Uint8Array): Promise<void>;
  /** Frames from the server until the connection ends. */
  frames(): AsyncIterable<Uint8Array>;
  /** Close the connection. */
  close(): void;
  /**
   * The transfer lane (WebTransport only): a second stream for large
   * transfers beside this one, opened on the first call and reused.
   */
  lane?(): Promise<ClientTransport>;
}

/** Options to open a transport. */
export interface OpenOptions {
  /** `https://host:port/amtp` (WebTransport) or `wss://host:port/amtp`. */
  url: string;
  /** SHA-256 of a self-signed server certificate, hex (WebTransport pinning). */
  certHash?: string;
  /** Extra CA certificates in PEM (Deno only; WebSocket to a self-signed server). */
  caCerts?: string[];
  /** Largest frame accepted from the server. */
  maxFrame?: number;
}

function hexToBytes(hex: string): Uint8Array<ArrayBuffer> {
  const clean = hex.replace(/[^0-9a-f]/gi, "");
  const out = new Uint8Array(clean.length / 2);
  for (let i = 0; i < out.length; i++) {
    out[i] = parseInt(clean.slice(i * 2, i * 2 + 2), 16);
  }
  return out;
}

/**
 * Open a WebTransport session and its command stream; `lane()` opens the
 * transfer stream beside it (once).
 */
export async function openWebTransport(
  options: OpenOptions,
): Promise<ClientTransport> {
  const init: WebTransportOptions = {};
  if (options.certHash) {
    init.serverCertificateHashes = [{
      algorithm: "sha-256",
      value: hexToBytes(options.certHash),
    }];
  }
  const wt = new WebTransport(options.url, init);
  // A lost connection rejects `closed`; the read loop reports it instead.
  wt.closed.catch(() => {});
  await wt.ready;
  const maxFrame = options.maxFrame ?? 16 * 1024 * 1024;
  let closed = false;
  const overStream = async (): Promise<ClientTransport> => {
    const stream = await wt.createBidirectionalStream();
    const writer = stream.writable.getWriter();
    return {
      async send(frame) {
        await writer.write(frame);
      },
      async *frames() {
        const decoder = new FrameDecoder(maxFrame);
        const reader = stream.readable.getReader();
        try {
          while (true) {
            const { value, done } = await reader.read();
            if (done) return;
            yield* decoder.pushOrThrow(value);
          }
        } catch (error) {
          if (!closed) throw error;
        } finally {
          reader.releaseLock();
        }
      },
      close,
    };
  };
  const close = () => {
    if (closed) return;
    closed = true;
    try {
      wt.close();
    } catch {
      // Already closed.
    }
  };
  const commands = await overStream();
  let lane: Promise<ClientTransport> | undefined;
  return {
    ...commands,
    lane: () => lane ??= overStream(),
  };
}

/**
 * Bytes a WebSocket may hold unsent before a send waits: a sender of large
 * frames (an upload) keeps at most about this much queued, so that a
 * command sent meanwhile is not queued behind megabytes.
 */
export const WEBSOCKET_SEND_BUFFER = 512 * 1024;

/**
 * Resolves once the socket holds at most {@link WEBSOCKET_SEND_BUFFER}
 * unsent bytes, or is closed. A WebSocket has no drain event:
 * `bufferedAmount` is checked every few milliseconds while over.
 */
function drained(socket: WebSocket): Promise<void> {
  if (socket.bufferedAmount <= WEBSOCKET_SEND_BUFFER) return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (
        socket.bufferedAmount <= WEBSOCKET_SEND_BUFFER ||
        socket.readyState !== WebSocket.OPEN
      ) resolve();
      else setTimeout(check, 4);
    };
    setTimeout(check, 4);
  });
}

/**
 * Open a WebSocket carrying one frame per binary message; a send resolves
 * once the socket's unsent bytes are back under {@link WEBSOCKET_SEND_BUFFER}.
 */
export async function openWebSocket(
  options: OpenOptions,
): Promise<ClientTransport> {
  const url = options.url.replace(/^https:/, "wss:").replace(/^http:/, "ws:");
  const deno = (globalThis as { Deno?: typeof Deno }).Deno;
  const socket = options.caCerts && deno?.createHttpClient
    ? new WebSocket(url, {
      client: deno.createHttpClient({ caCerts: options.caCerts }),
    } as unknown as string[])
    : new WebSocket(url);
  socket.binaryType = "arraybuffer";
  await new Promise<void>((resolve, reject) => {
    socket.onopen = () => resolve();
    socket.onerror = (event) =>
      reject(
        new Error(
          `WebSocket connection to ${url} failed: ${
            (event as ErrorEvent).message ?? "error"
          }`,
        ),
      );
  });
  const queue: Uint8Array[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  socket.onmessage = (event) => {
    if (event.data instanceof ArrayBuffer) {
      queue.push(new Uint8Array(event.data));
      wake?.();
    }
  };
  socket.onclose = () => {
    ended = true;
    wake?.();
  };
  return {
    send(frame) {
      socket.send(frame);
      return drained(socket);
    },
    async *frames() {
      while (true) {
        const next = queue.shift();
        if (next) {
          yield next;
          continue;
        }
        if (ended) return;
        await new Promise<void>((resolve) => wake = resolve);
        wake = undefined;
      }
    },
    close() {
      if (socket.readyState <= WebSocket.OPEN) socket.close(1000);
    },
  };
}
