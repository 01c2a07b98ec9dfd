/**
 * Every acknowledged message is durable: the server process is killed with
 * SIGKILL right after it acknowledged a send, started again on the same data,
 * and the message is there for sender and recipient.
 */

import assert from "node:assert/strict";
import { AmtpClient } from "../client/mod.ts";
import { certificateHash } from "../shared/pem.ts";
import { bootstrapKey, login, makeKey } from "../testing/helpers.ts";
import { mailSession } from "../testing/mail.ts";
import { startServerProcess } from "../testing/process.ts";

async function connect(cwd: string, port: number): Promise<AmtpClient> {
  const certHash = await certificateHash(
    await Deno.readTextFile(`${cwd}/data/tls/cert.pem`),
  );
  return await AmtpClient.connect({
    url: `https://127.0.0.1:${port}/amtp`,
    certHash,
    keepAliveMs: 0,
  });
}

Deno.test("durability: a send acknowledged just before SIGKILL is there after a restart", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-kill-" });
  let server = await startServerProcess(cwd, { AMTP_PORT: "0" });
  try {
    const admin = await connect(cwd, server.port);
    const token = await login(
      admin,
      "admin",
      "admin",
      await bootstrapKey(`${cwd}/data`),
    );
    await admin.call("admin_add_domain", {
      admin_token: token,
      domain: "example.org",
    });
    const aliceKey = await makeKey("HPKE-X25519");
    const bobKey = await makeKey("HPKE-X25519");
    for (
      const [address, key] of [["alice@example.org", aliceKey], [
        "bob@example.org",
        bobKey,
      ]] as const
    ) {
      await admin.call("admin_add_user", {
        admin_token: token,
        address,
        algorithm: key.algorithm,
        public_key: key.publicKey,
      });
    }
    const alice = await mailSession(
      await connect(cwd, server.port),
      "alice@example.org",
      aliceKey,
    );
    // Several sends in flight; the process dies the moment the last one is acknowledged.
    const acknowledged: string[] = [];
    await Promise.all(Array.from({ length: 10 }, async (_, i) => {
      const r = await alice.call<{ message_id: string }>("send", {
        to: ["bob@example.org"],
        subject: `kill ${i}`,
        body: `body ${i}`,
      });
      acknowledged.push(r.message_id);
    }));
    const last = await alice.call<{ message_id: string }>("send", {
      to: ["bob@example.org"],
      subject: "last",
      body: "the last word",
    });
    server.child.kill("SIGKILL");
    await server.stop("SIGKILL");
    acknowledged.push(last.message_id);
    admin.close();
    alice.client.close();

    server = await startServerProcess(cwd, { AMTP_PORT: "0" });
    const bob = await mailSession(
      await connect(cwd, server.port),
      "bob@example.org",
      bobKey,
    );
    const inbox = await bob.call<{ messages: { message_id: string }[] }>(
      "list",
      { limit: 200 },
    );
    assert.deepEqual(
      inbox.messages.map((m) => m.message_id).sort(),
      [...acknowledged].sort(),
    );
    const body = await bob.call<{ body: string }>("get", {
      id: last.message_id,
    });
    assert.equal(body.body, "the last word");
    const aliceAgain = await mailSession(
      await connect(cwd, server.port),
      "alice@example.org",
      aliceKey,
    );
    const sent = await aliceAgain.call<{ messages: { message_id: string }[] }>(
      "list",
      { folder: "sent", limit: 200 },
    );
    assert.deepEqual(
      sent.messages.map((m) => m.message_id).sort(),
      [...acknowledged].sort(),
    );
    bob.client.close();
    aliceAgain.client.close();
  } finally {
    await server.stop();
    await Deno.remove(cwd, { recursive: true });
  }
});
