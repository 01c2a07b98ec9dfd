/**
 * The client library in a real browser: Debian's Chromium, headless, opens
 * the web check page from plain HTTP on loopback (a secure context), which
 * connects to a running server over WebTransport with the certificate hash.
 */

import assert from "node:assert/strict";
import { buildWeb, serveWeb } from "../web/serve.ts";
import { startTestServer } from "../testing/helpers.ts";

const CHROMIUM = Deno.env.get("CHROMIUM") ?? "/usr/bin/chromium";
const DIR = new URL("./browser/", import.meta.url).pathname;

async function ensurePlaywright(): Promise<void> {
  try {
    await Deno.stat(`${DIR}node_modules/playwright-core`);
  } catch {
    const npm = await new Deno.Command("npm", {
      args: ["ci", "--no-audit", "--no-fund"],
      cwd: DIR,
      stdout: "null",
      stderr: "piped",
    })
      .output();
    if (!npm.success) {
      throw new Error(
        `npm ci in tests/browser failed: ${
          new TextDecoder().decode(npm.stderr)
        }`,
      );
    }
  }
}

Deno.test("browser: Chromium runs the client library and talks to the server over WebTransport", async () => {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(
      `this test needs Chromium at ${CHROMIUM} (Debian: apt-get install chromium); .ci/run installs it`,
    );
  }
  await ensurePlaywright();
  await buildWeb();
  const t = await startTestServer();
  const web = serveWeb(0);
  const shot = await Deno.makeTempFile({ suffix: ".png" });
  try {
    const url =
      `http://127.0.0.1:${web.addr.port}/?server=127.0.0.1:${t.server.port}&hash=${t.server.certSha256()}`;
    const run = await new Deno.Command("node", {
      args: [`${DIR}check_page.mjs`, url, shot],
      cwd: DIR,
      env: { CHROMIUM },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const out = new TextDecoder().decode(run.stdout);
    assert.equal(run.code, 0, new TextDecoder().decode(run.stderr));
    const result = JSON.parse(out.trim().split("\n").at(-1)!);
    assert.equal(result.className, "ok", result.text);
    assert.match(result.text, /Connected over WebTransport/);
    assert.match(result.text, /server: AMTP Deno Server 0\.1\.0/);
    assert.match(
      result.text,
      /login algorithms: Ed25519, HPKE-X25519, RSA-OAEP-256/,
    );
    assert.match(result.text, /modules: .*messages/);
    assert.ok((await Deno.stat(shot)).size > 1000, "a screenshot was taken");
    // A wrong certificate hash is refused by the browser.
    const wrong = await new Deno.Command("node", {
      args: [
        `${DIR}check_page.mjs`,
        url.replace(/hash=[0-9a-f]+/, `hash=${"0".repeat(64)}`),
        "",
      ],
      cwd: DIR,
      env: { CHROMIUM },
      stdout: "piped",
    }).output();
    const refused = JSON.parse(
      new TextDecoder().decode(wrong.stdout).trim().split("\n").at(-1)!,
    );
    assert.equal(refused.className, "fail");
  } finally {
    await web.shutdown();
    await t.close();
    await Deno.remove(shot);
  }
});
