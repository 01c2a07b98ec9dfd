import assert from "node:assert/strict";
import { chainPem, createCertificate } from "./cert.ts";
import { certificateHash, fromPem, toPem } from "../../shared/pem.ts";

function serveOnce(certPem: string, keyPem: string) {
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    cert: certPem,
    key: keyPem,
    onListen() {},
  }, () => new Response("hello"));
  return server;
}

Deno.test("cert: a self-signed certificate is accepted by TLS when trusted", async () => {
  const cert = await createCertificate({
    names: ["localhost", "127.0.0.1"],
    days: 13,
  });
  assert.equal(cert.sha256, await certificateHash(cert.certPem));
  assert.equal(cert.sha256.length, 64);
  assert.ok(cert.notAfter.getTime() - Date.now() < 14 * 86_400_000);
  const server = serveOnce(cert.certPem, cert.keyPem);
  try {
    const client = Deno.createHttpClient({ caCerts: [cert.certPem] });
    const response = await fetch(`https://127.0.0.1:${server.addr.port}/`, {
      client,
    });
    assert.equal(await response.text(), "hello");
    client.close();
  } finally {
    await server.shutdown();
  }
});

Deno.test("cert: a leaf signed by a CA verifies with the CA alone, for its names only", async () => {
  const ca = await createCertificate({
    names: ["Test CA"],
    days: 30,
    ca: true,
  });
  const leaf = await createCertificate({
    names: ["localhost", "127.0.0.1"],
    days: 30,
    issuer: ca,
  });
  const server = serveOnce(
    chainPem(leaf.certPem, ca.certPem),
    leaf.keyPem,
  );
  try {
    const client = Deno.createHttpClient({ caCerts: [ca.certPem] });
    const ok = await fetch(`https://localhost:${server.addr.port}/`, {
      client,
    });
    assert.equal(await ok.text(), "hello");
    client.close();
    const other = await createCertificate({
      names: ["Other CA"],
      days: 30,
      ca: true,
    });
    const wrongClient = Deno.createHttpClient({ caCerts: [other.certPem] });
    await assert.rejects(() =>
      fetch(`https://localhost:${server.addr.port}/`, { client: wrongClient })
    );
    wrongClient.close();
  } finally {
    await server.shutdown();
  }
});

Deno.test("cert: PEM round trip", () => {
  const bytes = crypto.getRandomValues(new Uint8Array(1000));
  assert.deepEqual(fromPem(toPem("TEST", bytes)), bytes);
});
