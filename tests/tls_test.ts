/**
 * Certificates in a running server: configured PEM files replaced on disk are
 * picked up without a restart. Live sessions, WebTransport and WebSocket,
 * continue; new connections get the new certificate.
 */

import assert from "node:assert/strict";
import { chainPem, createCertificate } from "../core/tls/mod.ts";
import { startTestServer, waitFor } from "../testing/helpers.ts";

Deno.test("tls: renewed certificate files are served without a restart", async () => {
  const dir = await Deno.makeTempDir({ prefix: "amtp-tls-" });
  const ca = await createCertificate({
    names: ["AMTP Test"],
    days: 30,
    ca: true,
  });
  const names = ["localhost", "127.0.0.1"];
  const first = await createCertificate({ names, days: 13, issuer: ca });
  await Deno.writeTextFile(
    `${dir}/cert.pem`,
    chainPem(first.certPem, ca.certPem),
  );
  await Deno.writeTextFile(`${dir}/key.pem`, first.keyPem);
  const t = await startTestServer(
    { AMTP_CERT: `${dir}/cert.pem`, AMTP_KEY: `${dir}/key.pem` },
    { certCheckMs: 200 },
  );
  try {
    assert.equal(t.server.certSha256(), first.sha256);
    assert.equal(t.server.certificate().selfSigned, false);
    const old = await t.connect({ certHash: first.sha256 });
    const ws = await t.connect({
      transport: "websocket",
      caCerts: [ca.certPem],
    });
    let closed = false;
    ws.closed.then(() => closed = true);
    assert.equal((await ws.request("ping")).error, 0);

    const second = await createCertificate({ names, days: 13, issuer: ca });
    await Deno.writeTextFile(`${dir}/key.pem`, second.keyPem);
    await Deno.writeTextFile(
      `${dir}/cert.pem`,
      chainPem(second.certPem, ca.certPem),
    );
    await waitFor(
      () => t.server.certSha256() === second.sha256,
      5000,
      "reload",
    );
    assert.ok(t.logs.some((l) => l.includes("certificate_reloaded")));

    // The WebTransport session opened with the old certificate goes on.
    assert.equal((await old.request("ping")).error, 0);
    // New WebTransport connections get the new certificate.
    const fresh = await t.connect({ certHash: second.sha256 });
    const info = await fresh.call<{ certificate_sha256: string }>("info");
    assert.equal(info.certificate_sha256, second.sha256);
    await assert.rejects(() => t.connect({ certHash: first.sha256 }));
    // The WebSocket session goes on too, and new ones are served.
    assert.equal((await ws.request("ping")).error, 0);
    assert.equal(closed, false);
    const wsFresh = await t.connect({
      transport: "websocket",
      caCerts: [ca.certPem],
    });
    assert.equal((await wsFresh.request("ping")).error, 0);
  } finally {
    await t.close();
    await Deno.remove(dir, { recursive: true });
  }
});
