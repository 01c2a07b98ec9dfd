/**
 * Accounts and administration over real sessions: login by challenge-response
 * with both key algorithms, every admin and user command, and every refusal.
 */

import assert from "node:assert/strict";
import { type AmtpClient, AmtpError } from "../client/mod.ts";
import { LOGIN_ALGORITHMS } from "../shared/login/algorithms.ts";
import {
  answerChallenge,
  type LoginChallenge,
} from "../shared/login/answer.ts";
import { ErrorCode } from "../core/protocol/mod.ts";
import {
  bootstrapKey,
  login,
  makeKey,
  startTestServer,
  type TestKey,
  type TestServer,
} from "../testing/helpers.ts";

async function expectError(
  promise: Promise<unknown>,
  code: number,
  message?: RegExp,
): Promise<AmtpError> {
  try {
    await promise;
  } catch (error) {
    assert.ok(error instanceof AmtpError, String(error));
    assert.equal(error.code, code, `${error.message}`);
    if (message) assert.match(error.message, message);
    return error;
  }
  assert.fail(`expected error ${code}`);
}

async function adminSession(
  t: TestServer,
): Promise<{ client: AmtpClient; token: string; key: TestKey }> {
  const client = await t.connect();
  const key = await bootstrapKey(t.dataDir);
  return { client, key, token: await login(client, "admin", "admin", key) };
}

for (const algorithm of LOGIN_ALGORITHMS) {
  Deno.test(`accounts: the whole admin life cycle with ${algorithm} keys`, async () => {
    const t = await startTestServer();
    try {
      const { client, token } = await adminSession(t);
      const a = (command: string, params: Record<string, unknown> = {}) =>
        client.call<Record<string, unknown>>(command, {
          admin_token: token,
          ...params,
        });

      const sys = await a("admin_sysinfo");
      for (
        const field of [
          "app_name",
          "app_version",
          "os_name",
          "os_version",
          "cpu_model",
          "cpu_cores",
          "cpu_arch",
          "cpu_load",
          "ram_total",
          "ram_free",
          "hostname",
          "networks",
          "uptime",
        ]
      ) {
        assert.ok(field in sys, field);
      }
      assert.ok((sys.ram_total as number) > 0);

      // Domains.
      await a("admin_add_domain", {
        domain: "Example.ORG",
        description: "main",
      });
      await a("admin_add_domain", { domain: "other.test" });
      await expectError(
        a("admin_add_domain", { domain: "example.org" }),
        ErrorCode.ALREADY_EXISTS,
      );
      const page1 = await a("admin_get_domains", { limit: 1 });
      assert.equal(
        (page1.domains as { name: string }[])[0].name,
        "example.org",
      );
      assert.ok(page1.cursor);
      const page2 = await a("admin_get_domains", {
        limit: 1,
        cursor: page1.cursor,
      });
      assert.equal((page2.domains as { name: string }[])[0].name, "other.test");
      assert.equal(page2.cursor, undefined);
      const found = await a("admin_get_domains", { search: "OTHER" });
      assert.equal((found.domains as unknown[]).length, 1);
      const edited = await a("admin_set_domain", {
        domain: "example.org",
        description: "edited",
      });
      assert.equal(edited.description, "edited");

      // Users, with a key of the algorithm under test.
      const userKey = await makeKey(algorithm);
      const user = await a("admin_add_user", {
        address: "Alice@Example.org",
        name: "Alice",
        algorithm,
        public_key: userKey.publicKey,
        key_label: "laptop",
      });
      assert.equal(user.address, "alice@example.org");
      assert.equal(
        (user.keys as { key_id: string }[])[0].key_id,
        userKey.keyId,
      );
      const bobKey = await makeKey(algorithm);
      await a("admin_add_user", {
        address: "bob@example.org",
        algorithm,
        public_key: bobKey.publicKey,
      });
      await expectError(
        a("admin_add_user", {
          address: "x@nowhere.test",
          algorithm,
          public_key: bobKey.publicKey,
        }),
        ErrorCode.UNKNOWN_DOMAIN,
      );
      const users = await a("admin_get_users", { domain: "example.org" });
      assert.deepEqual(
        (users.users as { address: string }[]).map((u) => u.address),
        ["alice@example.org", "bob@example.org"],
      );
      const renamed = await a("admin_set_user", {
        address: "bob@example.org",
        name: "Bob",
        quota: 1000,
      });
      assert.equal(renamed.name, "Bob");
      assert.equal(renamed.quota, 1000);

      // Aliases and catch-all.
      const alias = await a("admin_add_alias", {
        address: "team@example.org",
        recipients: [
          "alice@example.org",
          "bob@example.org",
          "carol@remote.test",
        ],
      });
      assert.deepEqual(alias.recipients, [
        "alice@example.org",
        "bob@example.org",
        "carol@remote.test",
      ]);
      await expectError(
        a("admin_add_alias", {
          address: "alice@example.org",
          recipients: ["bob@example.org"],
        }),
        ErrorCode.ALREADY_EXISTS,
      );
      await expectError(
        a("admin_add_alias", {
          address: "x@example.org",
          recipients: ["ghost@example.org"],
        }),
        ErrorCode.NOT_FOUND,
      );
      const aliases = await a("admin_get_aliases", {});
      assert.equal((aliases.aliases as unknown[]).length, 1);
      const changed = await a("admin_set_alias", {
        address: "team@example.org",
        recipients: ["alice@example.org"],
      });
      assert.deepEqual(changed.recipients, ["alice@example.org"]);
      await a("admin_set_catchall", {
        domain: "example.org",
        recipients: ["bob@example.org"],
      });
      assert.deepEqual(
        (await a("admin_get_catchall", { domain: "example.org" })).recipients,
        ["bob@example.org"],
      );

      // A second admin, who logs in with the algorithm under test.
      const adminKey = await makeKey(algorithm);
      await a("admin_add_admin", {
        name: "second",
        algorithm,
        public_key: adminKey.publicKey,
      });
      const admins = await a("admin_get_admins");
      assert.deepEqual(
        (admins.admins as { name: string }[]).map((x) => x.name),
        ["admin", "second"],
      );
      const second = await t.connect();
      const secondToken = await login(second, "admin", "second", adminKey);
      assert.equal(
        (await second.call<{ domains: unknown[] }>("admin_get_domains", {
          admin_token: secondToken,
        })).domains.length,
        2,
      );
      const extraKey = await makeKey("HPKE-X25519");
      const withKey = await a("admin_set_admin", {
        name: "second",
        add_key: { algorithm: "HPKE-X25519", public_key: extraKey.publicKey },
      });
      assert.equal((withKey.keys as unknown[]).length, 2);
      await a("admin_set_admin", { name: "second", del_key: extraKey.keyId });

      // Deletes.
      await a("admin_set_catchall", { domain: "example.org", recipients: [] });
      assert.deepEqual(
        (await a("admin_get_catchall", { domain: "example.org" })).recipients,
        [],
      );
      await a("admin_del_alias", { address: "team@example.org" });
      await expectError(
        a("admin_del_alias", { address: "team@example.org" }),
        ErrorCode.NOT_FOUND,
      );
      await a("admin_del_user", { address: "bob@example.org" });
      await a("admin_del_admin", { name: "second" });
      await expectError(
        second.call("admin_get_domains", { admin_token: secondToken }),
        ErrorCode.NOT_LOGGED_IN,
      );
      await expectError(
        a("admin_del_domain", { domain: "example.org" }),
        ErrorCode.DOMAIN_NOT_EMPTY,
      );
      const deleted = await a("admin_del_domain", {
        domain: "example.org",
        force: true,
      });
      assert.equal(deleted.deleted_users, 1);
      await a("admin_del_domain", { domain: "other.test" });
      assert.equal(
        (await a("admin_get_domains")).domains instanceof Array,
        true,
      );
      assert.equal(
        ((await a("admin_get_domains")).domains as unknown[]).length,
        0,
      );

      // Logout: the token is refused afterwards.
      await a("admin_logout");
      await expectError(a("admin_get_domains"), ErrorCode.NOT_LOGGED_IN);
    } finally {
      await t.close();
    }
  });
}

Deno.test("accounts: a user logs in and uses every user command", async () => {
  const t = await startTestServer();
  try {
    const { client: admin, token } = await adminSession(t);
    const a = (command: string, params: Record<string, unknown> = {}) =>
      admin.call<Record<string, unknown>>(command, {
        admin_token: token,
        ...params,
      });
    await a("admin_add_domain", { domain: "example.org" });
    const aliceKey = await makeKey("RSA-OAEP-256");
    const bobKey = await makeKey("HPKE-X25519");
    await a("admin_add_user", {
      address: "alice@example.org",
      name: "Alice",
      algorithm: aliceKey.algorithm,
      public_key: aliceKey.publicKey,
    });
    await a("admin_add_user", {
      address: "bob@example.org",
      name: "Bob",
      algorithm: bobKey.algorithm,
      public_key: bobKey.publicKey,
    });

    const alice = await t.connect({ transport: "websocket" });
    const aliceToken = await login(
      alice,
      "user",
      "alice@example.org",
      aliceKey,
    );
    const u = (command: string, params: Record<string, unknown> = {}) =>
      alice.call<Record<string, unknown>>(command, {
        user_token: aliceToken,
        ...params,
      });

    const info = await u("user_serverinfo");
    assert.equal(info.address, "alice@example.org");
    assert.equal(info.app_name, "AMTP Deno Server");

    const photo = new Uint8Array(2000).fill(7);
    const profile = await u("user_set_profile", {
      name: "Alice A.",
      photo,
      photo_type: "image/png",
    });
    assert.equal(profile.name, "Alice A.");
    await expectError(
      u("user_set_profile", {
        photo: new Uint8Array(60_000),
        photo_type: "image/png",
      }),
      ErrorCode.LIMIT_EXCEEDED,
    );
    await expectError(
      u("user_set_profile", { photo, photo_type: "text/html" }),
      ErrorCode.INVALID_PARAMETER,
    );
    const e2e = await u("user_add_public_key", {
      algorithm: "X25519",
      key: new Uint8Array(32).fill(1),
      label: "phone",
    });

    const bob = await t.connect();
    const bobToken = await login(bob, "user", "bob@example.org", bobKey);
    const seen = await bob.call<Record<string, unknown>>("user_userinfo", {
      user_token: bobToken,
      address: "Alice@example.org",
    });
    assert.equal(seen.name, "Alice A.");
    assert.equal(seen.photo_type, "image/png");
    assert.deepEqual([...(seen.photo as Uint8Array)], [...photo]);
    assert.equal(
      (seen.public_keys as { key_id: string }[])[0].key_id,
      e2e.key_id,
    );
    assert.ok(!("keys" in seen), "login keys are not public");
    await expectError(
      bob.call("user_userinfo", {
        user_token: bobToken,
        address: "ghost@example.org",
      }),
      ErrorCode.NOT_FOUND,
    );
    await expectError(
      bob.call("user_userinfo", {
        user_token: bobToken,
        address: "x@remote.test",
      }),
      // Asked through federation; the tests' DNS (a closed loopback port) does not answer.
      ErrorCode.REMOTE_UNREACHABLE,
    );
    await u("user_del_public_key", { key_id: e2e.key_id });

    // Keys: a second device key, log in with it, then remove the first.
    const second = await makeKey("HPKE-X25519");
    await u("user_add_key", {
      algorithm: second.algorithm,
      public_key: second.publicKey,
      key_label: "phone",
    });
    await expectError(
      u("user_add_key", {
        algorithm: second.algorithm,
        public_key: second.publicKey,
      }),
      ErrorCode.ALREADY_EXISTS,
    );
    assert.equal(((await u("user_get_keys")).keys as unknown[]).length, 2);
    const phone = await t.connect();
    const phoneToken = await login(phone, "user", "alice@example.org", second);
    await u("user_del_key", { key_id: aliceKey.keyId });
    await expectError(
      u("user_del_key", { key_id: second.keyId }),
      ErrorCode.LAST_ADMIN,
    );

    // Sessions: list both, revoke the phone's.
    const sessions = (await u("user_get_sessions")).sessions as {
      session_id: string;
      current: boolean;
    }[];
    assert.equal(sessions.length, 2);
    const other = sessions.find((s) => !s.current)!;
    await u("user_del_session", { session_id: other.session_id });
    await expectError(
      phone.call("user_serverinfo", { user_token: phoneToken }),
      ErrorCode.NOT_LOGGED_IN,
    );

    await u("user_logout");
    await expectError(u("user_serverinfo"), ErrorCode.NOT_LOGGED_IN);
  } finally {
    await t.close();
  }
});

Deno.test("accounts: every admin command refuses no token, a user token and an expired token", async () => {
  let skew = 0;
  const t = await startTestServer({ AMTP_ADMIN_TOKEN_TTL: "1" }, {
    now: () => Date.now() + skew,
  });
  try {
    const { client, token } = await adminSession(t);
    await client.call("admin_add_domain", {
      admin_token: token,
      domain: "example.org",
    });
    const key = await makeKey("HPKE-X25519");
    await client.call("admin_add_user", {
      admin_token: token,
      address: "u@example.org",
      algorithm: key.algorithm,
      public_key: key.publicKey,
    });
    const userToken = await login(client, "user", "u@example.org", key);
    const adminCommands = t.server.commands.filter((c) =>
      c.startsWith("admin_") && !c.startsWith("admin_login")
    );
    assert.ok(adminCommands.length >= 20, adminCommands.join());
    skew = 1100; // the admin token's second has passed
    for (const command of adminCommands) {
      assert.equal(
        (await client.request(command, {})).error,
        ErrorCode.NOT_LOGGED_IN,
        command,
      );
      assert.equal(
        (await client.request(command, { user_token: userToken })).error,
        ErrorCode.FORBIDDEN,
        command,
      );
      assert.equal(
        (await client.request(command, { admin_token: userToken })).error,
        ErrorCode.FORBIDDEN,
        command,
      );
      const expired = await client.request(command, { admin_token: token });
      assert.equal(expired.error, ErrorCode.NOT_LOGGED_IN, command);
      assert.match(expired.message ?? "", /expired/);
    }
    for (
      const command of t.server.commands.filter((c) =>
        c.startsWith("user_") &&
        !["user_login_request", "user_login_verify", "user_register"].includes(
          c,
        )
      )
    ) {
      assert.equal(
        (await client.request(command, {})).error,
        ErrorCode.NOT_LOGGED_IN,
        command,
      );
      assert.equal(
        (await client.request(command, { admin_token: "x".repeat(64) })).error,
        ErrorCode.FORBIDDEN,
        command,
      );
    }
  } finally {
    await t.close();
  }
});

for (const algorithm of LOGIN_ALGORITHMS) {
  Deno.test(`accounts: ${algorithm} challenges are single-use, expire and belong to their session`, async () => {
    let skew = 0;
    const t = await startTestServer({ AMTP_CHALLENGE_TTL: "1" }, {
      now: () => Date.now() + skew,
    });
    try {
      const { client: admin, token } = await adminSession(t);
      const key = await makeKey(algorithm);
      await admin.call("admin_add_admin", {
        admin_token: token,
        name: "ops",
        algorithm,
        public_key: key.publicKey,
      });
      const client = await t.connect();
      const ask = async (c: AmtpClient) => {
        const challenge = await c.call<LoginChallenge>("admin_login_request", {
          user: "ops",
          server: "127.0.0.1",
        });
        assert.equal(challenge.algorithm, algorithm);
        assert.equal(challenge.key_id, key.keyId);
        assert.equal(challenge.nonce.length, 32);
        return await answerChallenge(key, challenge, {
          kind: "admin",
          account: "ops",
          server: "127.0.0.1",
        });
      };
      const proof = await ask(client);
      if ("verification_string" in proof) {
        // The decrypted string is the server's random string of 48 characters.
        assert.match(proof.verification_string, /^[A-Za-z0-9]{48}$/);
      }
      await client.call("admin_login_verify", { user: "ops", ...proof });
      // Replayed.
      await expectError(
        client.call("admin_login_verify", { user: "ops", ...proof }),
        ErrorCode.LOGIN_FAILED,
      );
      // Asked on one session, answered on another.
      const other = await t.connect();
      const foreign = await ask(client);
      await expectError(
        other.call("admin_login_verify", { user: "ops", ...foreign }),
        ErrorCode.LOGIN_FAILED,
      );
      // Expired.
      const late = await ask(client);
      skew += 1100; // past the challenge's second
      await expectError(
        client.call("admin_login_verify", { user: "ops", ...late }),
        ErrorCode.CHALLENGE_EXPIRED,
      );
      // Wrong answer: another challenge's proof, or a changed one.
      const first = await ask(client);
      await ask(client);
      await expectError(
        client.call("admin_login_verify", { user: "ops", ...first }),
        ErrorCode.LOGIN_FAILED,
      );
      const changed = await ask(client);
      if ("signature" in changed) changed.signature[0] ^= 1;
      else changed.verification_string = "x".repeat(48);
      await expectError(
        client.call("admin_login_verify", { user: "ops", ...changed }),
        ErrorCode.LOGIN_FAILED,
      );
      // No proof at all is a parameter error.
      await ask(client);
      await expectError(
        client.call("admin_login_verify", { user: "ops" }),
        ErrorCode.INVALID_PARAMETER,
      );
    } finally {
      await t.close();
    }
  });
}

Deno.test("accounts: the owner's own failures block their source until an admin lifts it", async () => {
  const t = await startTestServer();
  try {
    const { client: admin, token } = await adminSession(t);
    await admin.call("admin_add_domain", {
      admin_token: token,
      domain: "example.org",
    });
    const key = await makeKey();
    await admin.call("admin_add_user", {
      admin_token: token,
      address: "v@example.org",
      algorithm: key.algorithm,
      public_key: key.publicKey,
    });
    const wrong = await makeKey();
    const owner = await t.connect();
    // A wrong key file, six times: its challenges are answered with a bad signature.
    for (let i = 0; i < 6; i++) {
      const challenge = await owner.call<LoginChallenge>(
        "user_login_request",
        { user: "v@example.org", server: "127.0.0.1" },
      );
      const proof = await answerChallenge(
        { ...wrong, keyId: challenge.key_id },
        challenge,
        { kind: "user", account: "v@example.org", server: "127.0.0.1" },
      );
      await expectError(
        owner.call("user_login_verify", { user: "v@example.org", ...proof }),
        ErrorCode.LOGIN_FAILED,
      );
    }
    const blocked = await expectError(
      login(owner, "user", "v@example.org", key),
      ErrorCode.LOGIN_BLOCKED,
    );
    assert.ok((blocked.data as { retry_after: number }).retry_after >= 1);
    const { blocks } = await admin.call<
      { blocks: { scope: string; id: string; blocked: boolean }[] }
    >("admin_get_blocks", { admin_token: token });
    const pair = blocks.find((b) => b.scope === "account_ip")!;
    assert.equal(pair.id, "user:v@example.org|127.0.0.1");
    assert.ok(pair.blocked);
    const account = blocks.find((b) => b.scope === "account")!;
    assert.equal(account.id, "user:v@example.org");
    assert.ok(!account.blocked, "six failures do not slow the account down");
    await expectError(
      admin.call("admin_del_block", {
        admin_token: token,
        scope: "nonsense",
        id: pair.id,
      }),
      ErrorCode.INVALID_PARAMETER,
    );
    await admin.call("admin_del_block", {
      admin_token: token,
      scope: "account_ip",
      id: pair.id,
    });
    await expectError(
      admin.call("admin_del_block", {
        admin_token: token,
        scope: "account_ip",
        id: pair.id,
      }),
      ErrorCode.NOT_FOUND,
    );
    assert.ok(await login(owner, "user", "v@example.org", key));
  } finally {
    await t.close();
  }
});

Deno.test("accounts: an unknown account's challenge looks like a known one's", async () => {
  const t = await startTestServer();
  try {
    const client = await t.connect();
    const ask = (user: string) =>
      client.call<Record<string, unknown>>("admin_login_request", {
        user,
        server: "127.0.0.1",
      });
    const known = await ask("admin");
    const unknown = await ask("nobody");
    assert.deepEqual(Object.keys(unknown).sort(), Object.keys(known).sort());
    for (const field of Object.keys(known)) {
      assert.equal(typeof unknown[field], typeof known[field], field);
    }
    assert.equal(unknown.algorithm, known.algorithm);
    assert.equal((unknown.nonce as Uint8Array).length, 32);
    assert.equal((unknown.key_id as string).length, 16);
    // The same unknown account shows the same key id each time.
    const again = await ask("nobody");
    assert.equal(again.key_id, unknown.key_id);
    assert.notDeepEqual(again.nonce, unknown.nonce);
    // And its verification fails like a wrong answer.
    await expectError(
      client.call("admin_login_verify", {
        user: "nobody",
        signature: new Uint8Array(64),
        client_nonce: new Uint8Array(32),
      }),
      ErrorCode.LOGIN_FAILED,
    );
  } finally {
    await t.close();
  }
});

Deno.test("accounts: invalid addresses, alias loops and the last admin are refused", async () => {
  const t = await startTestServer();
  try {
    const { client, token } = await adminSession(t);
    const a = (command: string, params: Record<string, unknown> = {}) =>
      client.call<Record<string, unknown>>(command, {
        admin_token: token,
        ...params,
      });
    await a("admin_add_domain", { domain: "example.org" });
    const key = await makeKey("HPKE-X25519");
    for (
      const address of [
        "a!b@example.org",
        "a#b@example.org",
        ".a@example.org",
        "no-at-sign",
        "a@-bad-.org",
      ]
    ) {
      const error = await expectError(
        a("admin_add_user", {
          address,
          algorithm: key.algorithm,
          public_key: key.publicKey,
        }),
        ErrorCode.INVALID_ADDRESS,
      );
      assert.ok((error.data as { rule: string }).rule.length > 5);
    }
    await expectError(
      a("admin_add_domain", { domain: "bad_domain" }),
      ErrorCode.INVALID_ADDRESS,
    );
    await expectError(
      a("admin_add_user", {
        address: "k@example.org",
        algorithm: "DSA",
        public_key: key.publicKey,
      }),
      ErrorCode.UNSUPPORTED_ALGORITHM,
    );
    await expectError(
      a("admin_add_user", {
        address: "k@example.org",
        algorithm: "RSA-OAEP-256",
        public_key: key.publicKey,
      }),
      ErrorCode.INVALID_KEY,
    );
    await a("admin_add_user", {
      address: "u@example.org",
      algorithm: key.algorithm,
      public_key: key.publicKey,
    });
    await a("admin_add_alias", {
      address: "a1@example.org",
      recipients: ["u@example.org"],
    });
    await a("admin_add_alias", {
      address: "a2@example.org",
      recipients: ["a1@example.org"],
    });
    await expectError(
      a("admin_add_alias", {
        address: "self@example.org",
        recipients: ["self@example.org"],
      }),
      ErrorCode.ALIAS_LOOP,
    );
    await expectError(
      a("admin_set_alias", {
        address: "a1@example.org",
        recipients: ["a2@example.org"],
      }),
      ErrorCode.ALIAS_LOOP,
    );
    await expectError(
      a("admin_add_alias", {
        address: "many@example.org",
        recipients: Array.from({ length: 101 }, (_, i) => `r${i}@remote.test`),
      }),
      ErrorCode.LIMIT_EXCEEDED,
    );
    await expectError(
      a("admin_del_admin", { name: "admin" }),
      ErrorCode.LAST_ADMIN,
    );
    await expectError(
      a("admin_set_admin", { name: "admin", disabled: true }),
      ErrorCode.LAST_ADMIN,
    );
    await expectError(
      a("admin_get_domains", { limit: 501 }),
      ErrorCode.INVALID_PARAMETER,
    );
    // Deleting a user drops it from aliases; an alias left empty goes too.
    const dropped = await a("admin_del_user", { address: "u@example.org" });
    assert.equal(dropped.aliases_updated, 1);
    assert.equal(
      ((await a("admin_get_aliases")).aliases as { address: string }[]).map((
        x,
      ) => x.address).join(),
      "a2@example.org",
    );
  } finally {
    await t.close();
  }
});

Deno.test("accounts: a forced domain delete leaves nothing orphaned and logs its users out", async () => {
  const t = await startTestServer();
  try {
    const { client, token } = await adminSession(t);
    const a = (command: string, params: Record<string, unknown> = {}) =>
      client.call<Record<string, unknown>>(command, {
        admin_token: token,
        ...params,
      });
    await a("admin_add_domain", { domain: "gone.test" });
    const key = await makeKey("HPKE-X25519");
    await a("admin_add_user", {
      address: "u@gone.test",
      algorithm: key.algorithm,
      public_key: key.publicKey,
    });
    await a("admin_add_alias", {
      address: "al@gone.test",
      recipients: ["u@gone.test"],
    });
    await a("admin_set_catchall", {
      domain: "gone.test",
      recipients: ["u@gone.test"],
    });
    const user = await t.connect();
    const userToken = await login(user, "user", "u@gone.test", key);
    await user.call("user_set_profile", {
      user_token: userToken,
      photo: new Uint8Array(10),
      photo_type: "image/png",
    });
    await a("admin_del_domain", { domain: "gone.test", force: true });
    const kv = t.server.store.kv;
    for (
      const prefix of [
        ["domain"],
        ["user"],
        ["alias"],
        ["catchall"],
        ["photo"],
        ["token_index", "user"],
      ]
    ) {
      const left = [];
      for await (const entry of kv.list({ prefix })) left.push(entry.key);
      assert.deepEqual(left, [], prefix.join("/"));
    }
    await expectError(
      user.call("user_serverinfo", { user_token: userToken }),
      ErrorCode.NOT_LOGGED_IN,
    );
  } finally {
    await t.close();
  }
});

Deno.test("accounts: self-registration only where an admin opened it", async () => {
  const t = await startTestServer();
  try {
    const { client, token } = await adminSession(t);
    await client.call("admin_add_domain", {
      admin_token: token,
      domain: "open.test",
    });
    const key = await makeKey("HPKE-X25519");
    const visitor = await t.connect();
    const register = () =>
      visitor.call("user_register", {
        address: "new@open.test",
        algorithm: key.algorithm,
        public_key: key.publicKey,
      });
    await expectError(register(), ErrorCode.REGISTRATION_CLOSED);
    await client.call("admin_set_domain", {
      admin_token: token,
      domain: "open.test",
      registration_open: true,
    });
    await register();
    await expectError(register(), ErrorCode.ALREADY_EXISTS);
    assert.ok(await login(visitor, "user", "new@open.test", key));
  } finally {
    await t.close();
  }
});

Deno.test("accounts: tokens are stored only as hashes, never in logs", async () => {
  const t = await startTestServer();
  try {
    const { client, token } = await adminSession(t);
    await client.call("admin_get_domains", { admin_token: token });
    for await (const entry of t.server.store.kv.list({ prefix: [] })) {
      assert.ok(!JSON.stringify(entry.key).includes(token));
      assert.ok(!JSON.stringify(entry.value ?? null).includes(token));
    }
    assert.ok(!t.logs.join("\n").includes(token));
  } finally {
    await t.close();
  }
});

Deno.test("accounts: a list cursor the server never gave is a parameter error (4), not a fault (10)", async () => {
  const t = await startTestServer();
  try {
    const { client, token } = await adminSession(t);
    await client.call("admin_add_domain", {
      admin_token: token,
      domain: "example.org",
    });
    for (
      const command of [
        "admin_get_domains",
        "admin_get_users",
        "admin_get_aliases",
        "admin_get_admins",
      ]
    ) {
      for (const cursor of ["garbage", "%%", "AA", 5, { a: 1 }, true]) {
        const error = await expectError(
          client.call(command, { admin_token: token, cursor }),
          ErrorCode.INVALID_PARAMETER,
        );
        assert.equal(
          (error.data as { parameter: string }).parameter,
          "cursor",
          `${command} ${JSON.stringify(cursor)}`,
        );
      }
    }
    // Real cursors still page.
    const page = await client.call<{ domains: unknown[]; cursor?: string }>(
      "admin_get_domains",
      { admin_token: token, limit: 1 },
    );
    assert.equal(page.domains.length, 1);
  } finally {
    await t.close();
  }
});
