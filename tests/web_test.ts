/**
 * The web app's HTTP side (PROTOCOL.md §1.1) on a real server: served over
 * HTTPS on the TCP port and on the loopback listener, each answer with a
 * strict Content-Security-Policy; the loopback listener refuses pages under
 * other names (DNS rebinding) and WebSocket upgrades from other origins.
 */

import assert from "node:assert/strict";
import { startTestServer } from "../testing/helpers.ts";

/** One raw HTTP/1.1 exchange on loopback: the answer's status line and head. */
async function rawHead(port: number, request: string): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await conn.write(new TextEncoder().encode(request));
    const buffer = new Uint8Array(8192);
    let text = "";
    while (!text.includes("\r\n\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    return text.split("\r\n\r\n")[0];
  } finally {
    conn.close();
  }
}

Deno.test("web: the app over HTTPS on the TCP port and on http://localhost, with a strict policy; rebinding and foreign origins refused", async () => {
  const t = await startTestServer({ AMTP_WEB: "on", AMTP_WEB_PORT: "0" });
  const client = Deno.createHttpClient({
    caCerts: [t.server.certificate().certPem],
  });
  try {
    // HTTPS on the AMTP port.
    const base = `https://127.0.0.1:${t.server.port}`;
    const page = await fetch(`${base}/`, { client });
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type")!, /^text\/html/);
    assert.match(await page.text(), /src="\/app.js"/);
    const policy = page.headers.get("content-security-policy")!;
    for (
      const part of [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "form-action 'none'",
      ]
    ) assert.ok(policy.includes(part), `${part} in ${policy}`);
    assert.doesNotMatch(policy, /unsafe|\*/);
    assert.equal(page.headers.get("x-frame-options"), "DENY");
    assert.equal(page.headers.get("x-content-type-options"), "nosniff");
    const site = await (await fetch(`${base}/config.json`, { client })).json();
    assert.equal(site.cert_sha256, t.server.certSha256());
    assert.match(site.webtransport, /^https:\/\/.+\/amtp$/);
    assert.match(site.websocket, /^wss:\/\/.+\/amtp$/);
    // Compressed, cached by ETag, GET and HEAD only, nothing else served.
    const app = await fetch(`${base}/app.js`, {
      client,
      headers: { "accept-encoding": "gzip" },
    });
    assert.equal(app.status, 200);
    const etag = app.headers.get("etag")!;
    await app.body?.cancel();
    const again = await fetch(`${base}/app.js`, {
      client,
      headers: { "if-none-match": etag },
    });
    assert.equal(again.status, 304);
    await again.body?.cancel();
    const post = await fetch(`${base}/`, { client, method: "POST", body: "x" });
    assert.equal(post.status, 405);
    await post.body?.cancel();
    const other = await fetch(`${base}/../data/admin.key`, { client });
    assert.equal(other.status, 404);
    await other.body?.cancel();
    // The HTML mail frame: remote images only when asked for.
    const frame = await fetch(`${base}/mail.html`, { client });
    const framePolicy = frame.headers.get("content-security-policy")!;
    await frame.body?.cancel();
    assert.doesNotMatch(framePolicy, /https:/);
    assert.match(framePolicy, /img-src data: blob:/);
    const remote = await fetch(`${base}/mail.html?remote=1`, { client });
    assert.match(remote.headers.get("content-security-policy")!, /https:/);
    await remote.body?.cancel();

    // The loopback listener.
    const local = t.server.webPort!;
    assert.match(
      await rawHead(
        local,
        `GET / HTTP/1.1\r\nHost: localhost:${local}\r\n\r\n`,
      ),
      /^HTTP\/1\.1 200/,
    );
    assert.match(
      await rawHead(local, `GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n`),
      /^HTTP\/1\.1 403/,
    );
    const upgrade = (origin: string) =>
      `GET /amtp HTTP/1.1\r\nHost: localhost:${local}\r\nUpgrade: websocket\r\n` +
      `Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n` +
      `Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: ${origin}\r\n\r\n`;
    assert.match(
      await rawHead(local, upgrade(`http://localhost:${local}`)),
      /^HTTP\/1\.1 101/,
    );
    // A page of another site may not drive the local user's server.
    assert.match(
      await rawHead(local, upgrade("https://evil.example")),
      /^HTTP\/1\.1 403/,
    );
    const config = await (await fetch(`http://localhost:${local}/config.json`))
      .json();
    assert.equal(config.websocket, `ws://localhost:${local}/amtp`);
    assert.equal(
      config.webtransport,
      `https://127.0.0.1:${t.server.port}/amtp`,
    );
    assert.equal(config.cert_sha256, t.server.certSha256());
  } finally {
    client.close();
    await t.close();
  }
});
