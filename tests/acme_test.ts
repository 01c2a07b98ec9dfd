/**
 * ACME against a real CA: Pebble (Debian's `pebble`) on loopback, validating
 * HTTP-01 on the port it is told (80 in production), names resolved by
 * dnsmasq. The server starts with a self-signed certificate, answers the
 * challenge, swaps the issued certificate in without a restart; clients
 * verify it against Pebble's root; a short-lived certificate is renewed
 * while sessions go on; a CA that fails is retried with backoff.
 */

import assert from "node:assert/strict";
import { X509Certificate } from "node:crypto";
import { Duplex } from "node:stream";
import { connect, createSecureContext, TLSSocket } from "node:tls";
import * as acme from "acme-client";
import { connectServer } from "../client/connect.ts";
import { freePort, startDns } from "../testing/dnsmasq.ts";
import { startTestServer, waitFor } from "../testing/helpers.ts";
import { havePebble, startPebble } from "../testing/pebble.ts";

const NAME = "mail.example.test";

/** The leaf certificate a chain starts with, parsed. */
function leafOf(chain: string): X509Certificate {
  return new X509Certificate(
    chain.match(
      /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/,
    )![0],
  );
}

async function world(options: { validity?: number; caDown?: boolean } = {}) {
  const dir = await Deno.makeTempDir({ prefix: "amtp-acme-" });
  const dns = await startDns(dir);
  await dns.set({ txt: [], hosts: [[NAME, "127.0.0.1"]] });
  const port = freePort();
  const httpPort = freePort();
  const pebble = await startPebble(dir, {
    dns: dns.address,
    tlsPort: port,
    httpPort,
    validitySeconds: options.validity,
  });
  if (options.caDown) await pebble.stop();
  const env = {
    AMTP_PORT: String(port),
    AMTP_HOSTNAME: NAME,
    AMTP_ACME: "1",
    AMTP_ACME_EMAIL: "postmaster@example.test",
    AMTP_ACME_DIRECTORY: pebble.directory,
    AMTP_ACME_CA: pebble.caFile,
    AMTP_ACME_HTTP_PORT: String(httpPort),
  };
  const t = await startTestServer(env, { acmeRetryMs: 500 });
  // Pebble's root, read once (it stays for Pebble's life; tests stop Pebble).
  let roots: Promise<string> | undefined;
  const connect = async (transport: "websocket" | "webtransport") =>
    await connectServer({
      host: NAME,
      port,
      transport,
      caCerts: [await (roots ??= pebble.roots())],
      nameServer: dns.address,
    }, { keepAliveMs: 0 });
  let current = t;
  return {
    t,
    pebble,
    connect,
    /** The same data folder, a new server. */
    async restart() {
      await current.server.close();
      // A new port: the old QUIC endpoint's may not be free yet.
      current = await startTestServer({
        ...env,
        AMTP_PORT: "0",
        AMTP_DATA: t.dataDir,
      });
      return current;
    },
    async close() {
      await current.close();
      if (current !== t) await Deno.remove(t.dataDir, { recursive: true });
      await pebble.stop();
      await dns.stop();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

Deno.test({
  name:
    "acme: a certificate from Pebble over HTTP-01, verified by clients against Pebble's root; a short-lived one is renewed and sessions on both transports go on",
  ignore: !havePebble(),
  fn: async () => {
    // 24 s certificates: renewed when a third remains, 16 s after issue.
    const w = await world({ validity: 24 });
    try {
      const { t } = w;
      assert.equal(t.server.certificate().selfSigned, true);
      await waitFor(
        () => !t.server.certificate().selfSigned,
        20_000,
        "the ACME certificate",
      );
      const first = t.server.certificate();
      assert.match(
        leafOf(first.certPem).subjectAltName ?? "",
        /DNS:mail\.example\.test/,
      );
      // Stored in the data folder, owner-only.
      const stored = await Deno.stat(`${t.dataDir}/acme/certificate.json`);
      assert.equal(stored.mode! & 0o077, 0);
      await Deno.stat(`${t.dataDir}/acme/account-key.pem`);

      // Clients verify the chain and the name against Pebble's root.
      const ws = await w.connect("websocket");
      const wt = await w.connect("webtransport");
      let wsClosed = false;
      ws.closed.then(() => wsClosed = true);
      assert.equal((await ws.request("ping")).error, 0);
      const info = await wt.call<{ certificate_sha256: string }>("info");
      assert.equal(info.certificate_sha256, first.sha256);

      // Renewal: a new certificate before the first one ends.
      await waitFor(
        () => t.server.certSha256() !== first.sha256,
        45_000,
        "the renewed certificate",
      );
      const second = t.server.certificate();
      assert.equal(second.selfSigned, false);
      assert.ok(second.notAfter!.getTime() > first.notAfter!.getTime());
      assert.equal(
        t.logs.filter((l) => l.includes("event=acme_issued")).length,
        2,
      );
      // Sessions opened before the swap go on, on both transports.
      assert.equal((await ws.request("ping")).error, 0);
      assert.equal((await wt.request("ping")).error, 0);
      assert.equal(wsClosed, false);
      // New connections get the renewed certificate, verified again.
      const fresh = await w.connect("webtransport");
      const again = await fresh.call<{ certificate_sha256: string }>("info");
      assert.equal(again.certificate_sha256, second.sha256);
      const freshWs = await w.connect("websocket");
      assert.equal((await freshWs.request("ping")).error, 0);
      for (const client of [fresh, freshWs, ws, wt]) client.close();
    } finally {
      await w.close();
    }
  },
});

Deno.test({
  name:
    "acme: a restarted server uses its stored certificate at once, without a new order",
  ignore: !havePebble(),
  fn: async () => {
    const w = await world();
    try {
      await waitFor(
        () => !w.t.server.certificate().selfSigned,
        20_000,
        "the ACME certificate",
      );
      const issued = w.t.server.certSha256();
      const restarted = await w.restart();
      assert.notEqual(restarted.server.port, 0);
      assert.equal(restarted.server.certificate().selfSigned, false);
      assert.equal(restarted.server.certSha256(), issued);
      assert.ok(!restarted.logs.some((l) => l.includes("event=acme_order")));
    } finally {
      await w.close();
    }
  },
});

Deno.test({
  name:
    "acme: a CA that cannot be reached is logged and retried with backoff, and the certificate in use stays",
  ignore: !havePebble(),
  fn: async () => {
    const w = await world({ caDown: true });
    try {
      const { t } = w;
      await waitFor(
        () => t.logs.filter((l) => l.includes("event=acme_failed")).length >= 3,
        20_000,
        "three failed attempts",
      );
      const failures = t.logs.filter((l) => l.includes("event=acme_failed"));
      assert.match(failures[0], /attempt=1 /);
      assert.match(failures[0], /in_use=self-signed/);
      assert.match(failures[2], /attempt=3 /);
      // Backoff: each retry waits twice as long as the one before.
      const delays = failures.slice(0, 3).map((l) =>
        Number(l.match(/retry_in_ms=(\d+)/)?.[1])
      );
      assert.deepEqual(delays, [500, 1000, 2000]);
      const at = failures.map((l) => Date.parse(l.match(/time=(\S+)/)![1]));
      assert.ok(at[2] - at[1] >= 1000, `${at}`);
      assert.equal(t.server.certificate().selfSigned, true);
      const client = await t.connect();
      assert.equal((await client.request("ping")).error, 0);
    } catch (e) {
      console.log(w.t.logs.slice(-30).join("\n"));
      throw e;
    } finally {
      await w.close();
    }
  },
});

Deno.test("acme: this Deno cannot serve a TLS-ALPN-01 certificate (its critical acmeIdentifier extension), so the server answers HTTP-01", async () => {
  // When this fails, the runtime serves it: TLS-ALPN-01 on the TCP port
  // (no port 80 needed) becomes possible (see core/tls/acme.ts).
  const [key, cert] = await acme.crypto.createAlpnCertificate(
    { identifier: { type: "dns", value: NAME } } as acme.Authorization,
    "token.thumbprint",
    await acme.crypto.createPrivateEcdsaKey(),
  );
  const context = createSecureContext({
    cert: cert.toString(),
    key: key.toString(),
  });
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepted = (async () => {
    const conn = await listener.accept();
    const stream = new Duplex({
      read() {
        const buffer = new Uint8Array(4096);
        conn.read(buffer).then(
          (n) => this.push(n === null ? null : buffer.subarray(0, n)),
          () => this.push(null),
        );
      },
      write(chunk, _encoding, callback) {
        conn.write(chunk).then(() => callback(), callback);
      },
    });
    const socket = new TLSSocket(stream, {
      isServer: true,
      secureContext: context,
      ALPNProtocols: ["acme-tls/1"],
    });
    socket.on("error", () => {});
    return { conn, socket };
  })();
  const outcome = await new Promise<string>((resolve) => {
    const client = connect({
      host: "127.0.0.1",
      port: (listener.addr as Deno.NetAddr).port,
      servername: NAME,
      ALPNProtocols: ["acme-tls/1"],
      rejectUnauthorized: false,
    });
    const timer = setTimeout(() => {
      client.destroy();
      resolve("no handshake");
    }, 3000);
    client.on("secureConnect", () => {
      clearTimeout(timer);
      client.destroy();
      resolve("served");
    });
    client.on("error", () => {
      clearTimeout(timer);
      resolve("refused");
    });
  });
  const { conn, socket } = await accepted;
  socket.destroy();
  try {
    conn.close();
  } catch { /* closed */ }
  listener.close();
  assert.notEqual(outcome, "served");
});

Deno.test({
  name:
    "acme: a renewal the CA does not answer is retried with backoff while the CA's certificate stays in use",
  ignore: !havePebble(),
  fn: async () => {
    const w = await world({ validity: 18 });
    try {
      const { t } = w;
      await waitFor(
        () => !t.server.certificate().selfSigned,
        20_000,
        "the ACME certificate",
      );
      const issued = t.server.certificate();
      (await w.connect("websocket")).close(); // Pebble's root, read now
      await w.pebble.stop();
      // Renewal is due a third before the end (12 s after issue).
      await waitFor(
        () => t.logs.some((l) => l.includes("event=acme_failed")),
        30_000,
        "a failed renewal",
      );
      const failure = t.logs.find((l) => l.includes("event=acme_failed"))!;
      assert.match(failure, new RegExp(`in_use=${issued.sha256} `));
      assert.match(failure, /retry_in_ms=500 /);
      assert.equal(t.server.certSha256(), issued.sha256);
      const client = await w.connect("websocket");
      assert.equal((await client.request("ping")).error, 0);
      client.close();
    } finally {
      await w.close();
    }
  },
});
