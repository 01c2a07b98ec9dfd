/**
 * Transports: WebTransport (QUIC) and WebSocket listeners on one port number,
 * both producing {@link Connection}s. The transport knows frames, never
 * commands.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import type { Admission, Connection } from "./connection.ts";
import { listenWebSocket, type WebSocketListener } from "./websocket.ts";
import {
  listenWebTransport,
  type WebTransportListener,
} from "./webtransport.ts";

export * from "./connection.ts";
export { S2S_ALPN, StreamConnection } from "./webtransport.ts";

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
export function startTransports(options: TransportOptions): Transports {
  const attempts = options.port === 0 ? 20 : 1;
  let lastError: unknown;
  for (let i = 0; i < attempts; i++) {
    const wt: WebTransportListener = listenWebTransport({
      ...options,
    });
    let ws: WebSocketListener;
    try {
      ws = listenWebSocket({ ...options, port: wt.port });
    } catch (error) {
      wt.close();
      lastError = error;
      continue;
    }
    return {
      port: wt.port,
      async setCertificate(cert, key) {
        wt.setCertificate(cert, key);
        await ws.setCertificate(cert, key);
      },
      async stop() {
        wt.stop();
        await ws.stop();
      },
      close() {
        wt.close();
      },
    };
  }
  throw lastError;
}
