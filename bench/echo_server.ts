/**
 * The baseline: a bare Deno server that echoes frames over WebTransport (one
 * stream per session) and WebSocket, with no AMTP at all. The benchmark
 * measures it next to AMTP in the same run.
 *
 * A frame holding the BSON document `{b: 1}` is not echoed: the server sends a
 * 100-byte frame to every session instead (the baseline of a push to all).
 *
 * A second TCP port serves the same WebSocket echo through the AMTP server's
 * own TCP transport (`node:tls` and the `ws` codec, see
 * `core/transport/tcp.ts`), so the cost of that transport is measured apart
 * from the AMTP layer above it.
 *
 * Prints `listening PORT TRANSPORT_PORT` and serves until killed.
 *
 * @module
 */

import { Logger } from "../core/log/mod.ts";
import { listenTcp } from "../core/transport/tcp.ts";

// The certificate comes from the benchmark (argument: a folder holding cert.pem and key.pem).
const dir = Deno.args[0];
const cert = {
  certPem: await Deno.readTextFile(`${dir}/cert.pem`),
  keyPem: await Deno.readTextFile(`${dir}/key.pem`),
};
const endpoint = new Deno.QuicEndpoint({ hostname: "127.0.0.1", port: 0 });
const listener = endpoint.listen({
  cert: cert.certPem,
  key: cert.keyPem,
  alpnProtocols: ["h3"],
});
const port = endpoint.addr.port;

/** `{b: 1}` in BSON. */
const BROADCAST = new Uint8Array([12, 0, 0, 0, 0x10, 0x62, 0, 1, 0, 0, 0, 0]);
/** A 100-byte BSON document `{p: "xx…"}`. */
const PUSH = new Uint8Array(100);
new DataView(PUSH.buffer).setInt32(0, 100, true);
PUSH.set([0x02, 0x70, 0], 4);
new DataView(PUSH.buffer).setInt32(7, 88, true);
PUSH.fill(0x78, 11, 98);
const senders = new Set<(frame: Uint8Array) => void>();

function isBroadcast(chunk: Uint8Array): boolean {
  return chunk.length === BROADCAST.length &&
    chunk.every((b, i) => b === BROADCAST[i]);
}

function broadcast(): void {
  for (const send of senders) send(PUSH);
}
(async () => {
  for await (const incoming of listener) {
    (async () => {
      const conn = await incoming.accept();
      const wt = await Deno.upgradeWebTransport(conn);
      await wt.ready;
      wt.closed.catch(() => {});
      for await (const stream of wt.incomingBidirectionalStreams) {
        const writer = stream.writable.getWriter();
        const send = (frame: Uint8Array) => writer.write(frame).catch(() => {});
        senders.add(send);
        (async () => {
          try {
            for await (const chunk of stream.readable) {
              if (isBroadcast(chunk)) broadcast();
              else await writer.write(chunk);
            }
          } catch {
            // Session gone.
          }
        })();
      }
    })().catch(() => {});
  }
})();
Deno.serve({
  hostname: "127.0.0.1",
  port,
  cert: cert.certPem,
  key: cert.keyPem,
  onListen() {},
}, (request) => {
  const { socket, response } = Deno.upgradeWebSocket(request);
  socket.binaryType = "arraybuffer";
  const send = (frame: Uint8Array) => socket.send(frame);
  socket.onopen = () => senders.add(send);
  socket.onclose = () => senders.delete(send);
  socket.onmessage = (event) => {
    if (isBroadcast(new Uint8Array(event.data))) broadcast();
    else socket.send(event.data);
  };
  return response;
});
const transport = listenTcp({
  hostname: "127.0.0.1",
  port: 0,
  cert: cert.certPem,
  key: cert.keyPem,
  maxFrame: 16 * 1024 * 1024,
  admission: { admit: () => true, release() {} },
  handshakeTimeoutMs: 10_000,
  maxConnections: Infinity,
  onConnection: async (conn) => {
    try {
      for await (const frame of conn.frames()) conn.send(frame);
    } catch {
      // Session gone.
    }
    conn.close();
  },
  log: new Logger({ level: "error" }),
});
console.log(`listening ${port} ${transport.port}`);
