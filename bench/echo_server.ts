/**
 * The baseline: a bare Deno server that echoes frames over WebTransport (one
 * stream per session) and WebSocket, with no AMTP at all. The benchmark
 * measures it next to AMTP in the same run.
 *
 * Prints `listening PORT` and serves until killed.
 *
 * @module
 */

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
(async () => {
  for await (const incoming of listener) {
    (async () => {
      const conn = await incoming.accept();
      const wt = await Deno.upgradeWebTransport(conn);
      await wt.ready;
      wt.closed.catch(() => {});
      for await (const stream of wt.incomingBidirectionalStreams) {
        const writer = stream.writable.getWriter();
        (async () => {
          try {
            for await (const chunk of stream.readable) {
              await writer.write(chunk);
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
  socket.onmessage = (event) => socket.send(event.data);
  return response;
});
console.log(`listening ${port}`);
