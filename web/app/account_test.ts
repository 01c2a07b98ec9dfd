import assert from "node:assert/strict";
import { bootstrapKey, startTestServer } from "../../testing/helpers.ts";
import { AdminSession } from "./account.ts";

Deno.test("web app: admin calls that find the token revoked share one new login and all succeed", async () => {
  const server = await startTestServer();
  try {
    const client = await server.connect();
    const admin = await AdminSession.signIn(
      client,
      "admin",
      await bootstrapKey(server.dataDir),
    );
    await admin.signOut(); // the token is revoked
    // Concurrent logins on one session would replace each other's pending
    // challenge: one login must serve them all.
    const answers = await Promise.all(
      Array.from({ length: 5 }, () => admin.call("admin_get_domains")),
    );
    assert.equal(answers.length, 5);
    for (const answer of answers) {
      assert.ok(answer && typeof answer === "object");
    }
    const events = (name: string) =>
      server.logs.filter((l) => l.includes(` event=${name} `));
    assert.equal(events("login").length, 2, "the sign-in and one renewal");
    assert.equal(events("login_failed").length, 0);
  } finally {
    await server.close();
  }
});
