/**
 * The client library used as docs/CLIENT.md says: from a project outside the
 * repository that links it, the example program connects, logs in, lists the
 * inbox and receives a message pushed while it waits.
 */

import assert from "node:assert/strict";
import { adminCaller, makeKey, startTestServer } from "../testing/helpers.ts";
import { toPem } from "../shared/pem.ts";
import { generateLoginKeyPair } from "../shared/login/algorithms.ts";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("client package: a program outside the repository imports @amtp/server/client and runs", async () => {
  const t = await startTestServer();
  const project = await Deno.makeTempDir({ prefix: "amtp-outside-" });
  try {
    const admin = await adminCaller(await t.connect(), t.dataDir);
    await admin("admin_add_domain", { domain: "example.org" });
    const pair = await generateLoginKeyPair("Ed25519");
    await admin("admin_add_user", {
      address: "alice@example.org",
      algorithm: pair.algorithm,
      public_key: pair.publicKey,
    });
    const bobKey = await makeKey();
    await admin("admin_add_user", {
      address: "bob@example.org",
      algorithm: bobKey.algorithm,
      public_key: bobKey.publicKey,
    });
    await Deno.writeTextFile(
      `${project}/alice.key`,
      toPem("PRIVATE KEY", pair.privateKey),
    );
    // Exactly as docs/CLIENT.md says.
    await Deno.writeTextFile(
      `${project}/deno.json`,
      JSON.stringify({ links: [ROOT] }),
    );
    await Deno.copyFile(
      `${ROOT}client/examples/hello.ts`,
      `${project}/hello.ts`,
    );
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--unstable-net",
        "--allow-net",
        "--allow-read",
        "hello.ts",
        `127.0.0.1:${t.server.port}`,
        t.server.certSha256(),
        "alice@example.org",
        "alice.key",
        "20",
      ],
      cwd: project,
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const reader = child.stdout.pipeThrough(new TextDecoderStream())
      .getReader();
    let out = "";
    while (!out.includes("waiting")) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
    // Bob writes while the program waits.
    const bob = await t.connect();
    const { token } = await bob.login("user", "bob@example.org", bobKey);
    await bob.call("send", {
      module: "messages",
      user_token: token,
      to: ["alice@example.org"],
      subject: "Hello from Bob",
      body: "hi",
    });
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      out += value;
    }
    const status = await child.status;
    const err = new TextDecoder().decode(
      (await new Response(child.stderr).arrayBuffer()) as ArrayBuffer,
    );
    assert.equal(status.code, 0, out + err);
    assert.match(out, /connected to AMTP Deno Server \(localhost\)/);
    assert.match(out, /alice@example\.org: 0 message\(s\) in the inbox/);
    assert.match(out, /new: bob@example\.org: Hello from Bob/);
    // The project got a lock file of its own, nothing else.
    const files = [...Deno.readDirSync(project)].map((e) => e.name).sort();
    assert.deepEqual(
      files.filter((f) => f !== "deno.lock"),
      ["alice.key", "deno.json", "hello.ts"],
    );
  } finally {
    await t.close();
    await Deno.remove(project, { recursive: true });
  }
});
