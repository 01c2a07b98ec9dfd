/**
 * The web app end to end in real headless Chromium against a real server
 * (tests/browser/webapp.mjs drives the browsers; this file runs the server,
 * a TCP proxy in front of Bob's browser, and the actions the script asks
 * for: cutting Bob's connection, restoring it, restarting the server).
 * Screenshots of each screen are kept in `$AMTP_ARTIFACTS` (default: a
 * temporary folder, printed).
 */

import assert from "node:assert/strict";
import { type ServerProcess, startServerProcess } from "../testing/process.ts";
import {
  BROWSER_DIR,
  CHROMIUM,
  ensureBrowserTools,
} from "../testing/browser.ts";
import { freePort } from "../testing/dnsmasq.ts";
import { adminCaller, makeKey } from "../testing/helpers.ts";
import { mailSession } from "../testing/mail.ts";
import { AmtpClient } from "../client/mod.ts";

/** A TCP proxy that can cut every connection through it and refuse new ones. */
function tcpProxy(target: number) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const open = new Set<Deno.Conn>();
  let cut = false;
  (async () => {
    for await (const conn of listener) {
      if (cut) {
        conn.close();
        continue;
      }
      try {
        const upstream = await Deno.connect({
          hostname: "127.0.0.1",
          port: target,
        });
        open.add(conn);
        open.add(upstream);
        const done = () => {
          for (const c of [conn, upstream]) {
            open.delete(c);
            try {
              c.close();
            } catch { /* closed */ }
          }
        };
        conn.readable.pipeTo(upstream.writable).catch(() => {}).finally(done);
        upstream.readable.pipeTo(conn.writable).catch(() => {}).finally(done);
      } catch {
        conn.close();
      }
    }
  })().catch(() => {});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    setCut(value: boolean) {
      cut = value;
      if (value) {
        for (const c of [...open]) {
          try {
            c.close();
          } catch { /* closed */ }
        }
        open.clear();
      }
    },
    close() {
      this.setCut(true);
      listener.close();
    },
  };
}

/** Carol, who has no end-to-end keys, sends Bob an HTML message with hostile parts. */
async function htmlMail(cwd: string, port: number): Promise<void> {
  const client = await AmtpClient.connect({
    url: `wss://127.0.0.1:${port}/amtp`,
    transport: "websocket",
    caCerts: [await Deno.readTextFile(`${cwd}/data/tls/cert.pem`)],
  });
  try {
    const admin = await adminCaller(client, `${cwd}/data`);
    const key = await makeKey();
    await admin("admin_add_user", {
      address: "carol@example.org",
      algorithm: key.algorithm,
      public_key: key.publicKey,
    });
    const carol = await mailSession(client, "carol@example.org", key);
    await carol.call("send", {
      to: ["bob@example.org"],
      subject: "HTML test",
      format: "html",
      body: `<p>Hello <b>bold</b></p>` +
        `<img src="https://remote.example/track.png" alt="tracker">` +
        `<script>parent.postMessage({ pwned: 1 }, "*")</script>` +
        `<img src="x" onerror="parent.postMessage({ pwned: 2 }, '*')">` +
        `<a href="javascript:parent.postMessage({ pwned: 3 }, '*')">link</a>`,
    });
  } finally {
    client.close();
  }
}

Deno.test("webapp: admin, invitations, live encrypted mail with an attachment, a reply, a cut connection and a server restart, in Chromium", async () => {
  await ensureBrowserTools();
  const cwd = await Deno.makeTempDir({ prefix: "amtp-webapp-" });
  const artifacts = Deno.env.get("AMTP_ARTIFACTS") ??
    await Deno.makeTempDir({ prefix: "amtp-webapp-shots-" });
  const env = {
    AMTP_HOST: "127.0.0.1",
    AMTP_PORT: String(freePort()),
    AMTP_WEB: "on",
    AMTP_WEB_PORT: String(freePort()),
  };
  // The server as people run it: `deno task start`, in a folder of its own.
  let server: ServerProcess = await startServerProcess(cwd, env);
  const proxy = tcpProxy(Number(env.AMTP_WEB_PORT));
  const node = new Deno.Command("node", {
    args: [
      `${BROWSER_DIR}webapp.mjs`,
      `http://localhost:${env.AMTP_WEB_PORT}/`,
      `http://localhost:${proxy.port}/`,
      `${cwd}/data/admin.key`,
      artifacts,
    ],
    cwd: BROWSER_DIR,
    env: { CHROMIUM },
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(node.stderr).text();
  const writer = node.stdin.getWriter();
  const steps: string[] = [];
  let result: Record<string, unknown> | undefined;
  try {
    const lines = node.stdout.pipeThrough(new TextDecoderStream());
    let buffer = "";
    for await (const chunk of lines) {
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        if (line.startsWith("@@STEP ")) steps.push(line.slice(7));
        else if (line.startsWith("@@RESULT ")) {
          result = JSON.parse(line.slice(9));
        } else if (line.startsWith("@@ACTION ")) {
          const name = line.slice(9);
          if (name === "cut") proxy.setCut(true);
          else if (name === "restore") proxy.setCut(false);
          else if (name === "html-mail") await htmlMail(cwd, server.port);
          else if (name === "restart") {
            await server.stop();
            server = await startServerProcess(cwd, env);
          }
          await writer.write(new TextEncoder().encode("ok\n"));
        }
      }
    }
    const status = await node.status;
    assert.ok(result, `no result from the browser script: ${await stderr}`);
    console.log(`screenshots: ${artifacts}`);
    assert.equal(
      result.failure,
      undefined,
      `${result.failure}\nsteps done: ${steps.join(" / ")}`,
    );
    assert.equal(status.code, 0);
    assert.equal(steps.length, 18, steps.join(" / "));
    assert.equal(result.signedInAgain, 20);
    // Keys made in each browser, kept non-extractable.
    assert.deepEqual(result.aliceKeys, [
      { address: "alice@example.org", extractable: false, type: "private" },
    ]);
    assert.deepEqual(result.bobKeys, [
      { address: "bob@example.org", extractable: false, type: "private" },
    ]);
    assert.match(String(result.encryption), /End-to-end encrypted/);
    assert.match(String(result.signature), /Signature verified/);
    assert.equal(result.attachmentSame, true);
    assert.equal(result.attachmentBytes, 300_000);
    assert.equal(result.threadMessages, 2);
    assert.equal(result.threadProblems, 0, "no false warning on the reply");
    assert.match(String(result.ownSignature), /your own device/);
    assert.deepEqual(result.afterCut, {
      away1: 1,
      away2: 1,
      hello: 1,
      rows: 3,
    });
    assert.equal(result.users, 3);
    assert.match(String(result.registrationClosed), /not open/);
    assert.deepEqual(result.carolKeys, [
      { address: "carol@open.example", extractable: false, type: "private" },
    ]);
    assert.match(
      String(result.messagesModule),
      /shipped.*services: accounts\.resolve, accounts\.profile, federation\.send, federation\.routes/,
    );
    assert.deepEqual(result.html, {
      pwned: [],
      remoteRequests: [],
      blocked: true,
      scriptsInFrame: 0,
    });
    assert.match(String(result.plainLine), /Not end-to-end/);
    assert.ok(Number(result.cspRefusals) > 0, "the policy refused something");
    assert.equal(result.clearSendBlocked, true);
    assert.equal(result.searchRows, 1);
    assert.match(
      String(result.offlineBody),
      /^(The figures are attached\.|number 1|number 2)$/,
    );
    assert.equal(result.codesMatch, true);
    assert.equal(result.aliceDevices, 2);
    const notes = result.notifications as { title: string; body: string }[];
    assert.equal(notes.length, 2, JSON.stringify(notes));
    const [encrypted, plain] = [
      notes.find((n) => n.body.includes("bob@example.org"))!,
      notes.find((n) => n.body.includes("carol@example.org"))!,
    ];
    assert.equal(encrypted.title, "New mail");
    assert.match(encrypted.body, /From alice@example\.org/);
    assert.doesNotMatch(encrypted.body, /never shown/);
    assert.equal(plain.title, "3 new messages");
    assert.match(plain.body, /Lunch/);
    assert.deepEqual(result.errors, []);
  } finally {
    try {
      node.kill();
    } catch { /* ended */ }
    await writer.close().catch(() => {});
    await stderr.catch(() => {});
    proxy.close();
    await server.stop();
    await Deno.remove(cwd, { recursive: true }).catch(() => {});
  }
});
