/**
 * Transports: WebTransport (QUIC) and WebSocket (TLS over TCP) listeners on one port number,
 * both producing {@link Connection}s. The transport knows frames, never
 * commands.
 *
 * @module
 */

import type { Listener, ListenerOptions, Transport } from "./connection.ts";
import { countOpenDescriptors, readDescriptorLimit } from "./descriptors.ts";
import { websocketOverTcp } from "./tcp.ts";
import { webTransport } from "./webtransport.ts";

export * from "./connection.ts";
export { raiseDescriptorLimit, readDescriptorLimit } from "./descriptors.ts";

/**
 * The transports, on one port number (UDP for QUIC, TCP for WebSocket): a
 * new transport is one file implementing {@link Transport} and a line here.
 * The first one picks the port when none is set; the others take the same.
 */
export const TRANSPORTS: readonly Transport[] = [
  webTransport,
  websocketOverTcp,
];

/** Options of {@link startTransports}: what every listener is given, and the descriptor reserve. */
export interface TransportOptions
  extends Omit<ListenerOptions, "maxConnections"> {
  /**
   * Descriptors kept free, beyond those open at start, for what opens later
   * (KV files, module processes, outbound connections): client TCP
   * connections are refused at the open-file limit minus both.
   */
  descriptorReserve: number;
  /** Listen addresses by protocol, when they differ from `hostname`. */
  hosts?: { udp?: string; tcp?: string };
}

/** The listeners, running. */
export interface Transports {
  /** The port number in use (UDP and TCP). */
  port: number;
  /** Switch every listener to a renewed certificate without dropping sessions. */
  setCertificate(cert: string, key: string): Promise<void>;
  /** Stop accepting new connections. */
  stop(): Promise<void>;
  /** Close what the listeners hold open (the QUIC endpoint ends every WebTransport session). */
  close(): void;
}

/**
 * Start every transport on the same port number. With port 0 a number free
 * for all of them is found.
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
    const listeners: Listener[] = [];
    let port = options.port;
    try {
      for (const transport of TRANSPORTS) {
        const hostname = options.hosts?.[transport.protocol] ??
          options.hostname;
        const listener = transport.listen({
          ...options,
          hostname,
          port,
          maxConnections,
        });
        listeners.push(listener);
        port = listener.port;
      }
    } catch (error) {
      // The port was free for one transport and not another: try another.
      for (const listener of listeners) {
        listener.stop();
        listener.close();
      }
      lastError = error;
      continue;
    }
    return {
      port,
      setCertificate(cert, key) {
        for (const listener of listeners) listener.setCertificate(cert, key);
        return Promise.resolve();
      },
      stop() {
        for (const listener of listeners) listener.stop();
        return Promise.resolve();
      },
      close() {
        for (const listener of listeners) listener.close();
      },
    };
  }
  throw lastError;
}
