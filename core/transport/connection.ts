/**
 * The transport-neutral connection every listener produces. Nothing above the
 * transport knows whether a session runs over WebTransport or WebSocket.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";

/** One client connection carrying frames (whole BSON documents). */
export interface Connection {
  /** Unique id. */
  readonly id: string;
  /**
   * `webtransport`, `websocket`, `peer` (another server, over QUIC), or
   * `unix` (a remote module on this host, workers/remote).
   */
  readonly transport: "webtransport" | "websocket" | "peer" | "unix";
  /** The peer's IP address. */
  readonly remoteAddr: string;
  /**
   * Whole frames, in order, each within the frame limit. Ends when the peer
   * goes away; throws a `FrameError` when the byte stream breaks the framing
   * (after which the connection must be closed).
   */
  frames(): AsyncIterable<Uint8Array>;
  /**
   * Send one frame; resolves when its bytes are written to the transport
   * (drained: a peer that does not read keeps it pending), or at once when
   * the connection is closed. Frames go out in the order sent.
   */
  send(frame: Uint8Array): Promise<void>;
  /** Close the connection; safe to call more than once. */
  close(reason?: string): void;
  /** Resolves once the connection is closed, from either side. */
  readonly closed: Promise<void>;
  /**
   * The transfer lane (WebTransport): a second stream the client may open
   * for large transfers beside the command stream; its requests are answered
   * on it, pushes never go there. Resolves when the client opens it; never
   * when it does not (other transports have none).
   */
  readonly lane?: Promise<Connection>;
}

/**
 * What every listener is given, whatever its transport (each uses what
 * applies to it).
 */
export interface ListenerOptions {
  /** Listen address. */
  hostname: string;
  /** Port number; 0 picks a free one. */
  port: number;
  /** PEM certificate chain. */
  cert: string;
  /** PEM private key. */
  key: string;
  /** Frame limit in bytes. */
  maxFrame: number;
  /** Per-IP and total connection limits. */
  admission: Admission;
  /**
   * Milliseconds a new connection has to establish its session (TLS and the
   * request head on TCP; the QUIC handshake, WebTransport CONNECT and first
   * stream on UDP); then it is closed and its place freed.
   */
  handshakeTimeoutMs: number;
  /** Connections a TCP listener may hold open at once (the descriptor budget). */
  maxConnections: number;
  /** Called for each established client connection. */
  onConnection: (conn: Connection) => void;
  /** Called for each server-to-server connection (QUIC, ALPN `amtp/1`), if given. */
  onPeerConnection?: (conn: Connection) => void;
  /** Serves plain HTTPS requests (not upgrades at `/amtp`; TCP), if given. */
  httpHandler?: (request: Request) => Response | Promise<Response>;
  /** Logger. */
  log: Logger;
}

/** A running listener. */
export interface Listener {
  /** The port number in use. */
  port: number;
  /** Serve new connections with another certificate; live sessions continue. */
  setCertificate(cert: string, key: string): void;
  /** Stop accepting (and drop connections still in their handshake). */
  stop(): void;
  /** Close what the listener holds open (the QUIC endpoint ends its sessions). */
  close(): void;
}

/** A way clients reach the server: listening on a port number makes connections. */
export interface Transport {
  /** Its name, for logs. */
  name: string;
  /** What it listens on (`AMTP_UDP_HOST` and `AMTP_TCP_HOST` choose the address of each). */
  protocol: "udp" | "tcp";
  /** Start listening. */
  listen(options: ListenerOptions): Listener;
}

/** Decides whether a new connection from an address may start. */
export interface Admission {
  /** Reserve a place for `ip`; false when a limit is reached. */
  admit(ip: string): boolean;
  /** Release the place `admit` reserved. */
  release(ip: string): void;
}

/** Counts connections per IP and in total against limits. */
export class ConnectionLimiter implements Admission {
  readonly #perIp = new Map<string, number>();
  #total = 0;
  readonly #maxPerIp: number;
  readonly #maxTotal: number;

  /** Create a limiter. */
  constructor(options: { maxPerIp: number; maxTotal: number }) {
    this.#maxPerIp = options.maxPerIp;
    this.#maxTotal = options.maxTotal;
  }

  /** Connections currently admitted. */
  get total(): number {
    return this.#total;
  }

  /** Reserve a place for `ip`; false when a limit is reached. */
  admit(ip: string): boolean {
    const count = this.#perIp.get(ip) ?? 0;
    if (count >= this.#maxPerIp || this.#total >= this.#maxTotal) return false;
    this.#perIp.set(ip, count + 1);
    this.#total++;
    return true;
  }

  /** Release a place. */
  release(ip: string): void {
    const count = this.#perIp.get(ip) ?? 0;
    if (count <= 1) this.#perIp.delete(ip);
    else this.#perIp.set(ip, count - 1);
    if (count > 0) this.#total--;
  }
}

let counter = 0;

/** A short unique connection id. */
export function newConnectionId(prefix: string): string {
  counter = (counter + 1) % 0x7fffffff;
  const random = crypto.getRandomValues(new Uint32Array(1))[0].toString(36);
  return `${prefix}${counter.toString(36)}${random}`;
}
