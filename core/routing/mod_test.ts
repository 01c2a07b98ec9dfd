import assert from "node:assert/strict";
import { openStore } from "../../kv/mod.ts";
import { resolveRecipients } from "./mod.ts";

Deno.test("routing: users, aliases, catch-all, remote, unknown and invalid", async () => {
  const dir = await Deno.makeTempDir({ prefix: "amtp-routing-" });
  const store = await openStore(`${dir}/kv`);
  try {
    const a = store.accounts;
    const now = new Date();
    await a.addDomain({
      name: "example.org",
      created: now,
      registration_open: false,
      description: "",
    });
    await a.addDomain({
      name: "open.test",
      created: now,
      registration_open: false,
      description: "",
    });
    for (
      const address of [
        "alice@example.org",
        "bob@example.org",
        "carol@example.org",
        "off@example.org",
      ]
    ) {
      await a.addUser({
        address,
        name: "",
        keys: [],
        public_keys: [],
        disabled: address.startsWith("off"),
        quota: 5,
        created: now,
        updated: now,
      });
    }
    const alias = (address: string, recipients: string[]) =>
      a.addAlias({
        address,
        recipients,
        description: "",
        created: now,
        updated: now,
      });
    await alias("team@example.org", [
      "alice@example.org",
      "bob@example.org",
      "carol@example.org",
    ]);
    await alias("all@example.org", [
      "team@example.org",
      "alice@example.org",
      "friend@remote.test",
    ]);
    await a.setCatchall({
      domain: "example.org",
      recipients: ["carol@example.org"],
      updated: now,
    });
    const r = await resolveRecipients(a, [
      "Alice@Example.org",
      "team@example.org",
      "all@example.org",
      "nobody@example.org",
      "x@remote.test",
      "nobody@open.test",
      "bad!@example.org",
      "off@example.org",
    ]);
    assert.deepEqual(r[0].mailboxes, [{
      address: "alice@example.org",
      quota: 5,
    }]);
    assert.equal(r[0].kind, "local");
    assert.deepEqual(r[1].mailboxes.map((m) => m.address), [
      "alice@example.org",
      "bob@example.org",
      "carol@example.org",
    ]);
    assert.equal(r[1].via, "alias");
    // Nested alias: each mailbox once, the remote member kept.
    assert.deepEqual(r[2].mailboxes.map((m) => m.address), [
      "alice@example.org",
      "bob@example.org",
      "carol@example.org",
    ]);
    assert.deepEqual(r[2].remote, ["friend@remote.test"]);
    assert.equal(r[3].via, "catchall");
    assert.deepEqual(r[3].mailboxes.map((m) => m.address), [
      "carol@example.org",
    ]);
    assert.equal(r[4].kind, "remote");
    assert.equal(r[5].kind, "unknown");
    assert.equal(r[6].kind, "invalid");
    assert.equal(r[7].kind, "unknown"); // disabled users receive nothing
  } finally {
    store.close();
    await Deno.remove(dir, { recursive: true });
  }
});
