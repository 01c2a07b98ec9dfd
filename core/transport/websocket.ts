/**
 * WebSocket over HTTPS (TCP) at `/amtp`, for clients without QUIC. One binary
 * message is one frame (BSON document). Text messages are refused.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import { checkLength, FrameError } from "../wire/mod.ts";
import {
  type Admission,
  type Connection,
  newConnectionId,
} from "./connection.ts";

/**
 * Bytes of frames a connection may hold unprocessed before it is closed
 * (WebSocket cannot pause the peer, so a pipelining client is bounded here;
 * WebTransport pauses reading instead).
 */
const MAX_QUEUED_BYTES = 32 * 1024 * 1024;

/** Options of {@link listenWebSocket}. */
export interface WebSocketOptions {
  /** Listen address. */
  hostname: string;
  /** TCP port. */
  port: number;
  /** PEM certificate chain. */
  cert: string;
  /** PEM private key. */
  key: string;
  /** Frame limit in bytes. */
  maxFrame: number;
  /** Per-IP and total connection limits. */
  admission: Admission;
  /** Called for each established connection. */
  onConnection: (conn: Connection) => void;
  /** Serves plain HTTP requests (not upgrades), if given. */
  httpHandler?: (request: Request) => Response | Promise<Response>;
  /** Logger. */
  log: Logger;
}

/** A running WebSocket listener. */
export interface WebSocketListener {
  /** The TCP port in use. */
  port: number;
  /** Serve new connections with another certificate; live sessions continue. */
  setCertificate(cert: string, key: string): Promise<void>;
  /** Stop accepting; resolves when the HTTP server has stopped. */
  stop(): Promise<void>;
}

/** Start the HTTPS server that upgrades `/amtp` to WebSocket sessions. */
export function listenWebSocket(options: WebSocketOptions): WebSocketListener {
  let server = serve(options, options.port, options.cert, options.key);
  const port = server.addr.port;
  return {
    port,
    async setCertificate(cert, key) {
      const old = server;
      server = serve(options, port, cert, key);
      await old.shutdown();
    },
    async stop() {
      await server.shutdown();
    },
  };
}

function serve(
  options: WebSocketOptions,
  port: number,
  cert: string,
  key: string,
): Deno.HttpServer<Deno.NetAddr> {
  return Deno.serve({
    hostname: options.hostname,
    port,
    cert,
    key,
    reusePort: true,
    onListen() {},
    onError(error) {
      options.log.debug("http_error", { error: String(error) });
      return new Response("internal error", { status: 500 });
    },
  }, (request, info) => handle(request, info.remoteAddr.hostname, options));
}

function handle(
  request: Request,
  ip: string,
  options: WebSocketOptions,
): Response | Promise<Response> {
  const url = new URL(request.url);
  const isUpgrade = request.headers.get("upgrade")?.toLowerCase() ===
    "websocket";
  if (!isUpgrade || url.pathname !== "/amtp") {
    if (options.httpHandler) return options.httpHandler(request);
    return new Response("not found\n", { status: 404 });
  }
  if (!options.admission.admit(ip)) {
    options.log.warn("connection_refused", {
      transport: "websocket",
      ip,
      reason: "too many sessions",
    });
    return new Response("too many sessions\n", { status: 429 });
  }
  const { socket, response } = Deno.upgradeWebSocket(request, {
    idleTimeout: 60,
  });
  const connection = new WebSocketConnection(socket, ip, options.maxFrame);
  connection.closed.then(() => options.admission.release(ip));
  socket.addEventListener("open", () => options.onConnection(connection), {
    once: true,
  });
  return response;
}

class WebSocketConnection implements Connection {
  readonly id = newConnectionId("ws");
  readonly transport = "websocket" as const;
  readonly remoteAddr: string;
  readonly closed: Promise<void>;
  readonly #socket: WebSocket;
  readonly #queue: (Uint8Array | FrameError)[] = [];
  #wake?: () => void;
  #ended = false;
  #queuedBytes = 0;

  constructor(socket: WebSocket, ip: string, maxFrame: number) {
    this.#socket = socket;
    this.remoteAddr = ip;
    socket.binaryType = "arraybuffer";
    this.closed = new Promise((resolve) => {
      socket.addEventListener("close", () => {
        this.#ended = true;
        this.#wake?.();
        resolve();
      });
    });
    socket.addEventListener("message", (event) => {
      if (this.#ended) return;
      if (!(event.data instanceof ArrayBuffer)) {
        this.#fail(
          new FrameError(
            "frame_malformed",
            "text messages are not allowed; send BSON in binary messages",
          ),
        );
        return;
      }
      const frame = new Uint8Array(event.data);
      try {
        checkLength(frame.byteLength, maxFrame);
      } catch (error) {
        this.#fail(error as FrameError);
        return;
      }
      if (this.#queuedBytes + frame.byteLength > MAX_QUEUED_BYTES) {
        this.#fail(
          new FrameError("frame_malformed", "too many unanswered frames"),
        );
        return;
      }
      this.#queue.push(frame);
      this.#queuedBytes += frame.byteLength;
      this.#wake?.();
    });
  }

  #fail(error: FrameError): void {
    this.#queue.push(error);
    this.#ended = true;
    this.#wake?.();
  }

  async *frames(): AsyncIterable<Uint8Array> {
    while (true) {
      const item = this.#queue.shift();
      if (item instanceof FrameError) throw item;
      if (item) {
        this.#queuedBytes -= item.byteLength;
        yield item;
        continue;
      }
      if (this.#ended) return;
      await new Promise<void>((resolve) => this.#wake = resolve);
      this.#wake = undefined;
    }
  }

  send(frame: Uint8Array): Promise<void> {
    if (this.#socket.readyState === WebSocket.OPEN) this.#socket.send(frame);
    return Promise.resolve();
  }

  close(reason = "closed"): void {
    if (
      this.#socket.readyState === WebSocket.CLOSING ||
      this.#socket.readyState === WebSocket.CLOSED
    ) return;
    this.#socket.close(1000, reason.slice(0, 100));
  }
}
