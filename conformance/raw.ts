/**
 * Raw connections for the suite, below the client library: a TLS socket to
 * the server's TCP port (verified like the client would: a pinned hash or a
 * CA), plain HTTP requests over it, a WebSocket written by hand (to send what
 * a good client never sends: unmasked frames, text, lying lengths), and the
 * raw byte stream of a WebTransport session.
 *
 * @module
 */

import tls from "node:tls";
import { BSON } from "bson";
import { openWebTransport } from "../client/transport.ts";
import type { ClientTransport } from "../client/transport.ts";
import { verifiedCertificateHash } from "../client/connect.ts";

/** Where the server is and how its certificate is trusted. */
export interface Target {
  /** Host name or address. */
  host: string;
  /** Port. */
  port: number;
  /** Pinned SHA-256 of its certificate (hex). */
  certHash?: string;
  /** CA certificates (PEM). */
  caCerts?: string[];
}

async function sha256Hex(bytes: Uint8Array): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new Uint8Array(bytes) as Uint8Array<ArrayBuffer>,
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

function isAddress(host: string): boolean {
  return /^[0-9.]+$/.test(host) || host.includes(":");
}

/** A TLS socket to the server's TCP port, its certificate checked; also its certificate's hash. */
export function openTls(
  target: Target,
): Promise<{ socket: tls.TLSSocket; certHash: string }> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: target.host,
      port: target.port,
      servername: isAddress(target.host) ? undefined : target.host,
      ca: target.caCerts?.length ? target.caCerts : undefined,
      rejectUnauthorized: !target.certHash,
      ALPNProtocols: ["http/1.1"],
    }, async () => {
      const raw = socket.getPeerCertificate(true)?.raw;
      const certHash = await sha256Hex(new Uint8Array(raw ?? []));
      if (target.certHash && certHash !== target.certHash.toLowerCase()) {
        socket.destroy();
        reject(
          new Error(
            `the certificate's hash is ${certHash}, not the pinned one`,
          ),
        );
        return;
      }
      resolve({ socket, certHash });
    });
    socket.once("error", reject);
    socket.setTimeout(10_000, () => socket.destroy(new Error("TLS timed out")));
  });
}

/** Bytes read from a socket until it closes (or `ms` pass). */
function readAll(socket: tls.TLSSocket, ms = 5000): Promise<Uint8Array> {
  return new Promise((resolve) => {
    const chunks: Uint8Array[] = [];
    const done = () => {
      clearTimeout(timer);
      const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
      let at = 0;
      for (const c of chunks) {
        out.set(c, at);
        at += c.length;
      }
      resolve(out);
    };
    const timer = setTimeout(() => {
      socket.destroy();
      done();
    }, ms);
    socket.on(
      "data",
      (chunk: Uint8Array) => chunks.push(new Uint8Array(chunk)),
    );
    socket.on("close", done);
    socket.on("error", () => {});
  });
}

/** Send a raw HTTP request; the status code and the head of the answer. */
export async function httpRequest(
  target: Target,
  head: string,
): Promise<{ status: number; head: string }> {
  const { socket } = await openTls(target);
  const reading = readAll(socket);
  socket.write(head);
  const text = new TextDecoder().decode(await reading);
  const status = Number(text.match(/^HTTP\/1\.[01] (\d{3})/)?.[1] ?? 0);
  return { status, head: text.split("\r\n\r\n")[0] };
}

/** A WebSocket frame from the server. */
export interface WsFrame {
  /** Opcode (1 text, 2 binary, 8 close, 9 ping, 10 pong). */
  opcode: number;
  /** Payload. */
  payload: Uint8Array;
}

/** A hand-written WebSocket client, to send anything. */
export interface RawWebSocket {
  /** Send one frame: opcode, payload, masked unless told, FIN unless told. */
  frame(
    opcode: number,
    payload: Uint8Array,
    options?: { masked?: boolean; fin?: boolean; length?: number },
  ): void;
  /** Send a BSON document as one binary message. */
  send(doc: Record<string, unknown>): void;
  /** The next frame from the server (undefined when the connection closed first). */
  next(ms?: number): Promise<WsFrame | undefined>;
  /** The next binary message decoded, skipping pings and pongs; undefined at close. */
  nextDocument(ms?: number): Promise<Record<string, unknown> | undefined>;
  /** Whether the server closed the connection. */
  closed(): boolean;
  /** Close it. */
  close(): void;
}

/** Open a WebSocket at `/amtp` by hand. */
export async function openRawWebSocket(target: Target): Promise<RawWebSocket> {
  const { socket } = await openTls(target);
  const key = btoa(
    String.fromCharCode(...crypto.getRandomValues(new Uint8Array(16))),
  );
  socket.write(
    `GET /amtp HTTP/1.1\r\nHost: ${target.host}:${target.port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: ${key}\r\n\r\n`,
  );
  let buffer = new Uint8Array(0);
  let ended = false;
  let wake: (() => void) | undefined;
  socket.on("data", (chunk: Uint8Array) => {
    const next = new Uint8Array(buffer.length + chunk.length);
    next.set(buffer);
    next.set(chunk, buffer.length);
    buffer = next;
    wake?.();
  });
  socket.on("close", () => {
    ended = true;
    wake?.();
  });
  socket.on("error", () => {});
  const waitData = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        wake = undefined;
        resolve();
      }, ms);
      wake = () => {
        clearTimeout(timer);
        wake = undefined;
        resolve();
      };
    });
  // The upgrade answer.
  const end = Date.now() + 10_000;
  while (true) {
    const text = new TextDecoder().decode(buffer);
    const at = text.indexOf("\r\n\r\n");
    if (at >= 0) {
      if (!/^HTTP\/1\.1 101/.test(text)) {
        socket.destroy();
        throw new Error(`no upgrade: ${text.split("\r\n")[0]}`);
      }
      buffer = buffer.slice(
        new TextEncoder().encode(text.slice(0, at + 4)).length,
      );
      break;
    }
    if (ended || Date.now() > end) throw new Error("no upgrade answer");
    await waitData(end - Date.now());
  }
  const parse = (): WsFrame | undefined => {
    if (buffer.length < 2) return undefined;
    const opcode = buffer[0] & 0x0f;
    let length = buffer[1] & 0x7f;
    let at = 2;
    if (length === 126) {
      if (buffer.length < 4) return undefined;
      length = (buffer[2] << 8) | buffer[3];
      at = 4;
    } else if (length === 127) {
      if (buffer.length < 10) return undefined;
      length = Number(
        new DataView(buffer.buffer, buffer.byteOffset).getBigUint64(2),
      );
      at = 10;
    }
    if (buffer.length < at + length) return undefined;
    const payload = buffer.slice(at, at + length);
    buffer = buffer.slice(at + length);
    return { opcode, payload };
  };
  const ws: RawWebSocket = {
    frame(opcode, payload, options = {}) {
      const masked = options.masked ?? true;
      const length = options.length ?? payload.length;
      const head: number[] = [(options.fin ?? true ? 0x80 : 0) | opcode];
      const maskBit = masked ? 0x80 : 0;
      if (length < 126) head.push(maskBit | length);
      else if (length < 65536) {
        head.push(maskBit | 126, length >> 8, length & 0xff);
      } else {
        head.push(maskBit | 127);
        const big = new Uint8Array(8);
        new DataView(big.buffer).setBigUint64(0, BigInt(length));
        head.push(...big);
      }
      let body = payload;
      if (masked) {
        const mask = crypto.getRandomValues(new Uint8Array(4));
        head.push(...mask);
        body = payload.map((b, i) => b ^ mask[i % 4]);
      }
      const out = new Uint8Array(head.length + body.length);
      out.set(head);
      out.set(body, head.length);
      socket.write(out);
    },
    send(doc) {
      ws.frame(2, new Uint8Array(BSON.serialize(doc)));
    },
    async next(ms = 5000) {
      const until = Date.now() + ms;
      while (true) {
        const frame = parse();
        if (frame) return frame;
        if (ended || Date.now() >= until) return undefined;
        await waitData(until - Date.now());
      }
    },
    async nextDocument(ms = 5000) {
      const until = Date.now() + ms;
      while (true) {
        const frame = await ws.next(Math.max(1, until - Date.now()));
        if (!frame) return undefined;
        if (frame.opcode === 2) {
          return BSON.deserialize(frame.payload, { promoteValues: false });
        }
        if (frame.opcode === 8) return undefined;
      }
    },
    closed: () => ended,
    close() {
      socket.destroy();
    },
  };
  return ws;
}

/** The raw byte stream of a WebTransport session (frames decoded, bytes sent as given). */
export async function openRawWebTransport(
  target: Target,
): Promise<ClientTransport> {
  let certHash = target.certHash;
  if (!certHash && target.caCerts?.length) {
    certHash = await verifiedCertificateHash(
      target.host,
      target.port,
      target.host,
      target.caCerts,
      10_000,
    );
  }
  const host = target.host.includes(":") ? `[${target.host}]` : target.host;
  return await openWebTransport({
    url: `https://${host}:${target.port}/amtp`,
    certHash,
  });
}
