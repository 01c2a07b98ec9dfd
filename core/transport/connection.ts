/**
 * The transport-neutral connection every listener produces. Nothing above the
 * transport knows whether a session runs over WebTransport or WebSocket.
 *
 * @module
 */

/** One client connection carrying frames (whole BSON documents). */
export interface Connection {
  /** Unique id. */
  readonly id: string;
  /** `webtransport`, `websocket`, or `peer` (another server, over QUIC). */
  readonly transport: "webtransport" | "websocket" | "peer";
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
