/**
 * Reaching a server from Deno the way a person names it: a host and port,
 * a pinned certificate hash or a CA file (or the system's roots), through a
 * chosen name server when the system's must not be used, over WebTransport
 * or WebSocket — with an error that says what was tried when it fails.
 *
 * Deno's WebTransport can take neither a CA nor an address found through
 * another resolver: with a CA file (or a resolved address) the server's
 * certificate is fetched once over TLS on the same port (TCP), verified
 * against the CA for the server's name, and then pinned for the QUIC
 * connection. WebSocket goes through `node:tls` (the `ws` package), which
 * takes a CA, a name to verify and an address.
 *
 * Deno only (the CLI and the conformance suite); browsers use
 * {@link AmtpClient.connect} directly.
 *
 * @module
 */

import tls from "node:tls";
import { WebSocket as NodeWebSocket } from "ws";
import { AmtpClient, type ClientOptions } from "./mod.ts";
import { type ClientTransport, openWebTransport } from "./transport.ts";
import { sha256Hex } from "../shared/pem.ts";

/** A server and how to reach it. */
export interface ServerTarget {
  /** Host name or IP address, as the user gave it. */
  host: string;
  /** Port (UDP for WebTransport, TCP for WebSocket). */
  port: number;
  /** `webtransport` (default) or `websocket`. */
  transport?: "webtransport" | "websocket";
  /** SHA-256 of the server's certificate, hex: pinned. */
  certHash?: string;
  /** CA certificates (PEM) to verify the server's certificate with, instead of the system's. */
  caCerts?: string[];
  /** `ip:port` of a name server to resolve `host` with (AMTP_DNS); the system's otherwise. */
  nameServer?: string;
  /** Milliseconds to wait for the connection (default 10 000). */
  timeoutMs?: number;
}

/** The connection could not be made; the message names what was tried. */
export class ConnectError extends Error {
  /** Stable error code. */
  readonly code = "connect_failed";

  /** Create the error. */
  constructor(message: string) {
    super(message);
    this.name = "ConnectError";
  }
}

/** How a target reads in messages: `host:port over WebTransport (QUIC, UDP)`. */
export function describeTarget(target: ServerTarget, address?: string): string {
  const where = `${bracket(target.host)}:${target.port}${
    address && address !== target.host ? ` (${address})` : ""
  }`;
  return `${where} over ${
    target.transport === "websocket"
      ? "WebSocket (TLS over TCP)"
      : "WebTransport (QUIC over UDP)"
  }`;
}

function bracket(host: string): string {
  return host.includes(":") ? `[${host}]` : host;
}

function isAddress(host: string): boolean {
  return /^[0-9.]+$/.test(host) || host.includes(":");
}

/** The address of `host` through `nameServer` (A, else AAAA); `host` itself without one. */
export async function resolveHost(
  host: string,
  nameServer?: string,
  timeoutMs = 5000,
): Promise<string> {
  if (!nameServer || isAddress(host) || host === "localhost") return host;
  const at = nameServer.lastIndexOf(":");
  const options = {
    nameServer: {
      ipAddr: nameServer.slice(0, at).replace(/^\[|\]$/g, ""),
      port: Number(nameServer.slice(at + 1)),
    },
  };
  for (const type of ["A", "AAAA"] as const) {
    try {
      const found = await Deno.resolveDns(host, type, {
        ...options,
        signal: AbortSignal.timeout(timeoutMs),
      });
      if (found.length) return found[0];
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) {
        throw new ConnectError(
          `cannot resolve ${host} through the name server ${nameServer} (AMTP_DNS): ${
            (error as Error).message
          }`,
        );
      }
    }
  }
  throw new ConnectError(
    `${host} has no address at the name server ${nameServer} (AMTP_DNS)`,
  );
}

/**
 * The certificate a server presents on its TCP port, verified for `name`
 * against `caCerts` (or the system's roots); returns its SHA-256, hex.
 */
export function verifiedCertificateHash(
  address: string,
  port: number,
  name: string,
  caCerts: string[] | undefined,
  timeoutMs: number,
): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: address,
      port,
      servername: isAddress(name) ? undefined : name,
      ca: caCerts?.length ? caCerts : undefined,
      ALPNProtocols: ["http/1.1"],
      checkServerIdentity: (_host: string, cert: tls.PeerCertificate) =>
        tls.checkServerIdentity(name, cert),
    }, () => {
      const cert = socket.getPeerCertificate(true);
      socket.destroy();
      clearTimeout(timer);
      sha256Hex(new Uint8Array(cert.raw)).then(resolve, reject);
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no TLS answer on TCP port ${port} in time`));
    }, timeoutMs);
    socket.on("error", (error: Error) => {
      clearTimeout(timer);
      reject(error);
    });
  });
}

/**
 * A WebSocket transport through `node:tls`: to `address`, verifying the
 * certificate for `name` (against `caCerts` or the system's roots), or,
 * with `certHash`, accepting exactly that certificate. One frame per binary
 * message.
 */
export function openNodeWebSocket(
  options: {
    address: string;
    port: number;
    name: string;
    certHash?: string;
    caCerts?: string[];
    maxFrame?: number;
    /** The local address to connect from. */
    localAddress?: string;
  },
): Promise<ClientTransport> {
  const { address, port, name } = options;
  const socket = new NodeWebSocket(`wss://${bracket(address)}:${port}/amtp`, {
    localAddress: options.localAddress,
    servername: isAddress(name) ? undefined : name,
    headers: { host: `${bracket(name)}:${port}` },
    ca: options.caCerts?.length ? options.caCerts : undefined,
    rejectUnauthorized: !options.certHash,
    checkServerIdentity: (_host: string, cert: tls.PeerCertificate) =>
      tls.checkServerIdentity(name, cert),
    maxPayload: options.maxFrame ?? 16 * 1024 * 1024,
    perMessageDeflate: false,
  });
  const transport = overNodeWebSocket(socket);
  let ended = false;
  socket.on("close", () => ended = true);
  return new Promise<ClientTransport>((resolve, reject) => {
    let pinned = !options.certHash;
    socket.once("upgrade", (response: { socket: tls.TLSSocket }) => {
      // A pinned certificate: exactly that one, before anything is sent.
      if (!options.certHash) return;
      const raw = response.socket.getPeerCertificate(true)?.raw;
      sha256Hex(new Uint8Array(raw ?? [])).then((hash) => {
        if (hash === options.certHash!.toLowerCase()) {
          pinned = true;
        } else {
          // Not terminate(): ws, still connecting after its upgrade event
          // here, throws from it (its request is gone). The socket goes.
          socket.on("error", () => {});
          response.socket.destroy();
          reject(
            new Error(
              `the certificate's SHA-256 is ${hash}, not the pinned ${options.certHash}`,
            ),
          );
        }
      });
    });
    socket.once("open", async () => {
      // The pin check above is asynchronous: wait for its verdict.
      for (let i = 0; !pinned && i < 100 && !ended; i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
      if (!pinned) return;
      socket.on("error", () => {});
      resolve(transport);
    });
    socket.once("error", (error: Error) => reject(error));
  });
}

/**
 * A `ws` socket as a client transport, one frame per binary message. Made
 * as soon as the socket is, so no message is missed; sends fail once the
 * socket is not open.
 */
export function overNodeWebSocket(socket: NodeWebSocket): ClientTransport {
  const queue: Uint8Array[] = [];
  let wake: (() => void) | undefined;
  let ended = false;
  socket.on("message", (data: Uint8Array) => {
    queue.push(new Uint8Array(data));
    wake?.();
  });
  socket.on("close", () => {
    ended = true;
    wake?.();
  });
  return {
    send: (frame) =>
      new Promise<void>((done, fail) => {
        if (socket.readyState !== NodeWebSocket.OPEN) {
          fail(new Error("the WebSocket connection is closed"));
          return;
        }
        socket.send(frame, (error?: Error) => error ? fail(error) : done());
      }),
    async *frames() {
      while (true) {
        const next = queue.shift();
        if (next) {
          yield next;
          continue;
        }
        if (ended) return;
        await new Promise<void>((r) => wake = r);
        wake = undefined;
      }
    },
    close: () => socket.close(1000),
  };
}

/** Words for what went wrong, without the runtime's jargon where it is known. */
function reasonOf(error: unknown, timeoutMs: number): string {
  const text = error instanceof Error ? error.message : String(error);
  if (/UnknownIssuer|self[- ]signed|unable to verify|certificate/i.test(text)) {
    return `the server's certificate is not trusted (${text}); pin it with --cert-hash HEX or give its CA with --ca FILE`;
  }
  if (/ECONNREFUSED|refused/i.test(text)) {
    return "connection refused (is the server running, on this port?)";
  }
  if (/timed out|timeout/i.test(text)) {
    return `no answer within ${
      timeoutMs / 1000
    } s (is the server running, and the port reachable?)`;
  }
  return text;
}

/** How to open a connection to a server, besides its {@link ServerTarget}. */
export interface OpenServerOptions {
  /** Largest frame accepted from the server. */
  maxFrame?: number;
  /** The local address to connect from (WebSocket only). */
  localAddress?: string;
}

/**
 * Open a connection (frames only, no client) to a server: its name resolved,
 * its certificate pinned or verified against a CA, over WebTransport or
 * WebSocket. Errors are {@link ConnectError}s naming the host, port,
 * address and transport tried, and why it failed.
 */
export async function openServerTransport(
  target: ServerTarget,
  options: OpenServerOptions = {},
): Promise<ClientTransport> {
  const timeoutMs = target.timeoutMs ?? 10_000;
  let what = describeTarget(target);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`timed out after ${timeoutMs / 1000} s`)),
      timeoutMs,
    );
  });
  try {
    const address = await resolveHost(
      target.host,
      target.nameServer,
      timeoutMs,
    );
    what = describeTarget(target, address);
    let certHash = target.certHash?.toLowerCase();
    if (target.transport === "websocket") {
      return await Promise.race([
        openNodeWebSocket({
          address,
          port: target.port,
          name: target.host,
          certHash,
          caCerts: target.caCerts,
          maxFrame: options.maxFrame,
          localAddress: options.localAddress,
        }),
        deadline,
      ]);
    }
    if (options.localAddress) {
      throw new Error(
        "a local address can be chosen over WebSocket only (Deno's WebTransport cannot bind one)",
      );
    }
    if (!certHash && (target.caCerts?.length || address !== target.host)) {
      certHash = await Promise.race([
        verifiedCertificateHash(
          address,
          target.port,
          target.host,
          target.caCerts,
          timeoutMs,
        ),
        deadline,
      ]);
    }
    return await Promise.race([
      openWebTransport({
        url: `https://${bracket(address)}:${target.port}/amtp`,
        certHash,
        maxFrame: options.maxFrame,
      }),
      deadline,
    ]);
  } catch (error) {
    if (error instanceof ConnectError) throw error;
    throw new ConnectError(
      `cannot reach ${what}: ${reasonOf(error, target.timeoutMs ?? 10_000)}`,
    );
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Connect to a server. Errors are {@link ConnectError}s naming the host,
 * port, address and transport tried, and why it failed.
 */
export async function connectServer(
  target: ServerTarget,
  options: Omit<ClientOptions, "url" | "open" | "transport"> = {},
): Promise<AmtpClient> {
  let first: ClientTransport | undefined = await openServerTransport(target, {
    maxFrame: options.maxFrame,
  });
  return await AmtpClient.connect({
    ...options,
    url: `https://${bracket(target.host)}:${target.port}/amtp`,
    transport: target.transport ?? "webtransport",
    serverName: target.host,
    // The first transport is the one just opened; a reconnect opens anew.
    open: () => {
      const opened = first;
      first = undefined;
      return opened
        ? Promise.resolve(opened)
        : openServerTransport(target, { maxFrame: options.maxFrame });
    },
  });
}
