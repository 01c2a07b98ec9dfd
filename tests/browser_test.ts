/**
 * The web app in a real browser: Debian's Chromium, headless, opens the app
 * the server itself serves on http://localhost (a secure context), where
 * the page pins the self-signed certificate's hash and connects over
 * WebTransport by itself.
 */

import assert from "node:assert/strict";
import { startTestServer } from "../testing/helpers.ts";
import { ensureBrowserTools, nodeScript } from "../testing/browser.ts";

Deno.test("browser: the served app connects over WebTransport by itself", async () => {
  await ensureBrowserTools();
  const t = await startTestServer({ AMTP_WEB: "on", AMTP_WEB_PORT: "0" });
  const shot = await Deno.makeTempFile({ suffix: ".png" });
  try {
    assert.ok(t.server.webPort, "the loopback web listener runs");
    const url = `http://localhost:${t.server.webPort}/`;
    const result = JSON.parse(
      (await nodeScript("check_page.mjs", [url, shot])).trim().split("\n")
        .at(-1)!,
    );
    assert.equal(result.title, "AMTP Mail");
    assert.match(result.status, /Online · WebTransport/);
    assert.deepEqual(result.errors, []);
    assert.ok((await Deno.stat(shot)).size > 1000, "a screenshot was taken");
  } finally {
    await t.close();
    await Deno.remove(shot);
  }
});
