/// <reference lib="dom" />
/**
 * The connection to the server: WebTransport first (the certificate's hash
 * pinned when it is self-signed, as the server's `config.json` says), and
 * WebSocket when WebTransport is missing, blocked or does not answer in
 * time — chosen again at every reconnect, shown to the user. The client
 * keeps the session alive (a ping every half idle timeout) and reconnects
 * with backoff; what was missed meanwhile is caught up by the mailbox.
 *
 * @module
 */

import {
  AmtpClient,
  type ClientOptions,
  type ClientTransport,
} from "../../client/mod.ts";
import { openWebSocket, openWebTransport } from "../../client/transport.ts";
import { Store } from "./store.ts";

/** What the server tells the page about reaching it (`/config.json`). */
export interface SiteConfig {
  /** The server's name. */
  hostname: string;
  /** WebTransport URL. */
  webtransport: string;
  /** WebSocket URL (`ws://localhost:…` on the loopback listener). */
  websocket: string;
  /** Hash of a self-signed certificate to pin, or null. */
  cert_sha256: string | null;
}

/** The connection as the user sees it. */
export interface ConnectionState {
  /** `connecting`, `online`, `reconnecting` or `closed`. */
  status: "connecting" | "online" | "reconnecting" | "closed";
  /** The transport in use. */
  transport?: "WebTransport" | "WebSocket";
  /** Why WebTransport was not used, or why the connection failed. */
  note?: string;
}

/** The connection's state, for the status bar. */
export const connection = new Store<ConnectionState>({ status: "connecting" });

/** Milliseconds WebTransport may take to open before WebSocket is tried. */
const WEBTRANSPORT_WAIT_MS = 4000;

/** The site's configuration. */
export async function loadSite(): Promise<SiteConfig> {
  const response = await fetch("/config.json", { cache: "no-store" });
  if (!response.ok) throw new Error(`config.json: ${response.status}`);
  return await response.json();
}

function within<T>(ms: number, step: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    step,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} timed out`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Open one transport: WebTransport, else WebSocket. */
async function open(site: SiteConfig): Promise<ClientTransport> {
  const options: ClientOptions = {
    url: site.webtransport,
    certHash: site.cert_sha256 ?? undefined,
  };
  let why = "";
  if (typeof WebTransport === "function") {
    try {
      const transport = await within(
        WEBTRANSPORT_WAIT_MS,
        openWebTransport(options),
        "WebTransport",
      );
      connection.set({ transport: "WebTransport", note: undefined });
      return transport;
    } catch (error) {
      why = `WebTransport failed (${
        error instanceof Error ? error.message : String(error)
      })`;
    }
  } else {
    why = "this browser has no WebTransport";
  }
  const transport = await openWebSocket({ url: site.websocket });
  connection.set({ transport: "WebSocket", note: `${why}: using WebSocket` });
  return transport;
}

/** Connect to the server, reconnecting for as long as the page lives. */
export async function connect(site: SiteConfig): Promise<AmtpClient> {
  connection.set({ status: "connecting" });
  let client: AmtpClient;
  try {
    client = await AmtpClient.connect({
      url: site.webtransport,
      // Logins name the server as the WebTransport URL does, whichever
      // transport carries them.
      serverName: new URL(site.webtransport).hostname,
      open: () => open(site),
      reconnect: true,
      keepAliveMs: 30_000,
    });
  } catch (error) {
    connection.set({
      status: "closed",
      note: error instanceof Error ? error.message : String(error),
    });
    throw error;
  }
  connection.set({ status: "online" });
  client.onState((state) => {
    connection.set({
      status: state === "reconnected"
        ? "online"
        : state === "disconnected"
        ? "reconnecting"
        : "closed",
    });
  });
  const info = await client.call<{ limits: { idle_timeout: number } }>(
    "info",
  );
  client.keepAlive(Math.max(1000, info.limits.idle_timeout * 500));
  return client;
}
