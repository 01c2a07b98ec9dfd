/**
 * Transports: WebTransport (QUIC) and WebSocket (TLS over TCP) listeners on one port number,
 * both producing {@link Connection}s. The transport knows frames, never
 * commands.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import type { Admission, Connection } from "./connection.ts";
import { countOpenDescriptors, readDescriptorLimit } from "./descriptors.ts";
import { listenTcp, type TcpListener } from "./tcp.ts";
import {
  listenWebTransport,
  type WebTransportListener,
} from "./webtransport.ts";

export * from "./connection.ts";
export { raiseDescriptorLimit, readDescriptorLimit } from "./descriptors.ts";

/** Options of {@link startTransports}. */
export interface TransportOptions {
  /** Listen address. */
  hostname: string;
  /** Port number for both UDP and TCP; 0 picks one free for both. */
  port: number;
  /** PEM certificate chain. */
  cert: string;
  /** PEM private key. */
  key: string;
  /** Frame limit in bytes. */
  maxFrame: number;
  /** Connection limits. */
  admission: Admission;
  /**
   * Milliseconds a new connection has to establish its session: TLS and the
   * request head on TCP; the QUIC handshake, WebTransport CONNECT and first
   * stream on UDP.
   */
  handshakeTimeoutMs: number;
  /**
   * Descriptors kept free, beyond those open at start, for what opens later
   * (KV files, module processes, outbound connections): client TCP
   * connections are refused at the open-file limit minus both.
   */
  descriptorReserve: number;
  /** Called for each established connection. */
  onConnection: (conn: Connection) => void;
  /** Called for each server-to-server connection. */
  onPeerConnection?: (conn: Connection) => void;
  /** Plain HTTPS requests (not `/amtp` upgrades). */
  httpHandler?: (request: Request) => Response | Promise<Response>;
  /** Logger. */
  log: Logger;
}

/** Both listeners, running. */
export interface Transports {
  /** The port number in use (UDP and TCP). */
  port: number;
  /** Switch both listeners to a renewed certificate without dropping sessions. */
  setCertificate(cert: string, key: string): Promise<void>;
  /** Stop accepting new connections. */
  stop(): Promise<void>;
  /** Close the QUIC endpoint (ends every WebTransport session). */
  close(): void;
}

/**
 * Start WebTransport on UDP and WebSocket on TCP with the same port number.
 * With port 0 a number free on both is found.
 */
export async function startTransports(
  options: TransportOptions,
): Promise<Transports> {
  // What is open at start (KV files, module processes, the runtime's own)
  // stays; the reserve covers what opens later.
  const limit = (await readDescriptorLimit())?.soft ?? Infinity;
  const inUse = await countOpenDescriptors() ?? 0;
  const maxConnections = Math.max(
    0,
    limit - inUse - options.descriptorReserve,
  );
  if (isFinite(limit)) {
    options.log.info("tcp_budget", { limit, inUse, maxConnections });
  } else {
    options.log.warn("tcp_budget_unknown", {
      error: "open-file limit unknown: TCP connections are not capped by it",
    });
  }
  const attempts = options.port === 0 ? 20 : 1;
  let lastError: unknown;
  for (let i = 0; i < attempts; i++) {
    const wt: WebTransportListener = listenWebTransport({
      ...options,
    });
    let tcp: TcpListener;
    try {
      tcp = listenTcp({ ...options, port: wt.port, maxConnections });
    } catch (error) {
      wt.close();
      lastError = error;
      continue;
    }
    return {
      port: wt.port,
      setCertificate(cert, key) {
        wt.setCertificate(cert, key);
        tcp.setCertificate(cert, key);
        return Promise.resolve();
      },
      stop() {
        wt.stop();
        tcp.stop();
        return Promise.resolve();
      },
      close() {
        wt.close();
      },
    };
  }
  throw lastError;
}
