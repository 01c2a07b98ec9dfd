/**
 * Attacks on logins against real servers: a stranger locking the owner out
 * from another address, verifies without a challenge, account existence read
 * from decoys (across a restart, with an RSA-only server), a phishing
 * server relaying a real server's challenge, and answers to an HPKE-X25519
 * challenge that are almost its string.
 */

import assert from "node:assert/strict";
import { AmtpClient, AmtpError, ChallengeRefused } from "../client/mod.ts";
import {
  decryptChallenge,
  LOGIN_ALGORITHMS,
} from "../shared/login/algorithms.ts";
import { loginContext } from "../shared/login/context.ts";
import { createCertificate } from "../core/tls/cert.ts";
import { ErrorCode } from "../core/protocol/mod.ts";
import { decodeDocument, encodeDocument } from "../core/wire/mod.ts";
import {
  adminCaller,
  login,
  makeKey,
  startTestServer,
  type TestServer,
} from "../testing/helpers.ts";
import { cleanEnv, taskArgs } from "../testing/process.ts";

/** The error code a call ends with (0 when it succeeds). */
async function codeOf(promise: Promise<unknown>): Promise<number> {
  try {
    await promise;
    return 0;
  } catch (error) {
    if (error instanceof AmtpError) return error.code;
    throw error;
  }
}

/** One failed login attempt of `user` on `client`: a challenge answered wrongly. */
async function failOnce(client: AmtpClient, user: string): Promise<number> {
  const asked = await codeOf(
    client.call("user_login_request", { user, server: "127.0.0.1" }),
  );
  if (asked !== 0) return asked;
  return await codeOf(
    client.call("user_login_verify", {
      user,
      signature: new Uint8Array(64),
      client_nonce: new Uint8Array(32),
      verification_string: "x".repeat(48),
    }),
  );
}

async function serverWithUser(
  t: TestServer,
  address: string,
): Promise<{
  admin: (c: string, p?: Record<string, unknown>) => Promise<unknown>;
  key: Awaited<ReturnType<typeof makeKey>>;
}> {
  const admin = await adminCaller(await t.connect(), t.dataDir);
  await admin("admin_add_domain", { domain: address.split("@")[1] })
    .catch(() => {});
  const key = await makeKey();
  await admin("admin_add_user", {
    address,
    algorithm: key.algorithm,
    public_key: key.publicKey,
  });
  return { admin, key };
}

Deno.test("login: a stranger's failures from other addresses never lock the owner out", async () => {
  let skew = 0;
  const t = await startTestServer({}, { now: () => Date.now() + skew });
  try {
    const { admin, key } = await serverWithUser(t, "v@example.org");
    // The owner logs in from their usual address once.
    const owner = await t.connect();
    assert.ok(await login(owner, "user", "v@example.org", key));

    // Strangers from five other addresses fail 25 times; when slowed down
    // they wait (the clock moves) and go on.
    for (let n = 2; n <= 6; n++) {
      const attacker = await t.connectFrom(`127.0.0.${n}`);
      for (let i = 0; i < 5; i++) {
        let code = await failOnce(attacker, "v@example.org");
        if (code === ErrorCode.LOGIN_BLOCKED) {
          skew += 61_000;
          code = await failOnce(attacker, "v@example.org");
        }
        assert.equal(code, ErrorCode.LOGIN_FAILED);
      }
    }

    // The owner, from the address they logged in from before, at once.
    assert.ok(await login(owner, "user", "v@example.org", key));
    assert.ok(await login(await t.connect(), "user", "v@example.org", key));

    // A source the account never logged in from is slowed down for it...
    const fresh = await t.connectFrom("127.0.0.7");
    const slowed = await login(fresh, "user", "v@example.org", key).then(
      () => assert.fail("a new source is slowed down"),
      (error) => error,
    );
    assert.ok(slowed instanceof AmtpError);
    assert.equal(slowed.code, ErrorCode.LOGIN_BLOCKED);
    assert.ok((slowed.data as { retry_after: number }).retry_after <= 60);
    // ...but not for other accounts.
    const other = await makeKey();
    await admin("admin_add_user", {
      address: "w@example.org",
      algorithm: other.algorithm,
      public_key: other.publicKey,
    });
    assert.ok(await login(fresh, "user", "w@example.org", other));

    // One source failing six times is blocked for the account: the owner's
    // own source is not.
    skew += 61_000;
    const persistent = await t.connectFrom("127.0.0.2");
    assert.equal(
      await failOnce(persistent, "v@example.org"),
      ErrorCode.LOGIN_FAILED,
    );
    assert.equal(
      await failOnce(persistent, "v@example.org"),
      ErrorCode.LOGIN_BLOCKED,
    );
    const blocked = async () =>
      ((await admin("admin_get_blocks")) as {
        blocks: { scope: string; id: string; blocked: boolean }[];
      }).blocks.filter((b) => b.id.includes("127.0.0.2"));
    assert.deepEqual(
      (await blocked()).map((b) => [b.scope, b.id, b.blocked]).sort(),
      [
        ["account_ip", "user:v@example.org|127.0.0.2", true],
        ["ip", "127.0.0.2", false],
      ],
    );
    assert.ok(await login(owner, "user", "v@example.org", key));

    // The offline tool lifts a source's blocks while the server runs.
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["run", ...taskArgs("admin"), "unblock", "ip", "127.0.0.2"],
      cwd: t.dataDir,
      env: cleanEnv({ AMTP_DATA: t.dataDir }),
      clearEnv: true,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const said = new TextDecoder().decode(output.stdout);
    assert.equal(output.code, 0, said);
    assert.match(said, /unblocked ip 127\.0\.0\.2 \(2 records\)/);
    assert.deepEqual(await blocked(), []);
  } finally {
    await t.close();
  }
});

Deno.test("login: an HPKE-X25519 challenge is proved by its exact string only", async () => {
  const t = await startTestServer();
  try {
    const admin = await adminCaller(await t.connect(), t.dataDir);
    await admin("admin_add_domain", { domain: "example.org" });
    const key = await makeKey("HPKE-X25519");
    const user = "h@example.org";
    await admin("admin_add_user", {
      address: user,
      algorithm: key.algorithm,
      public_key: key.publicKey,
    });
    const client = await t.connect();
    /** A challenge's string, decrypted as the client does. */
    const challenge = async () => {
      const asked = await client.call<
        { nonce: Uint8Array; verification_string: string; key_id: string }
      >("user_login_request", { user, server: "127.0.0.1" });
      assert.equal(asked.key_id, key.keyId);
      return await decryptChallenge(
        "HPKE-X25519",
        key.privateKey,
        asked.verification_string,
        loginContext({
          algorithm: "HPKE-X25519",
          kind: "user",
          account: user,
          keyId: key.keyId,
          server: "127.0.0.1",
          nonce: asked.nonce,
        }),
      );
    };
    const flip = (c: string) =>
      c === c.toLowerCase() ? c.toUpperCase() : c.toLowerCase();
    const near: ((secret: string) => string)[] = [
      (s) =>
        s.slice(0, -1) +
        (/[A-Za-z]/.test(s.at(-1)!)
          ? flip(s.at(-1)!)
          : s.at(-1) === "0"
          ? "1"
          : "0"),
      (s) => s.slice(0, -1),
      (s) => s + "A",
      // The same characters but one, which takes two bytes in UTF-8.
      (s) => s.slice(0, -1) + "\u00e9",
    ];
    for (const change of near) {
      const secret = await challenge();
      assert.equal(secret.length, 48);
      assert.equal(
        await codeOf(
          client.call("user_login_verify", {
            user,
            verification_string: change(secret),
          }),
        ),
        ErrorCode.LOGIN_FAILED,
      );
    }
    const secret = await challenge();
    const done = await client.call<{ user_token: string }>(
      "user_login_verify",
      { user, verification_string: secret },
    );
    assert.equal(done.user_token.length, 64);
    // Single use: the same string again proves nothing.
    assert.equal(
      await codeOf(
        client.call("user_login_verify", {
          user,
          verification_string: secret,
        }),
      ),
      ErrorCode.LOGIN_FAILED,
    );
  } finally {
    await t.close();
  }
});

Deno.test("login: verifies without a pending challenge are refused and not counted", async () => {
  const t = await startTestServer();
  try {
    const { key } = await serverWithUser(t, "v@example.org");
    const attacker = await t.connectFrom("127.0.0.2");
    for (let i = 0; i < 60; i++) {
      assert.equal(
        await codeOf(
          attacker.call("user_login_verify", {
            user: "v@example.org",
            verification_string: "x".repeat(48),
          }),
        ),
        ErrorCode.LOGIN_FAILED,
      );
    }
    // Nothing was counted: the owner logs in from a new address at once.
    const owner = await t.connectFrom("127.0.0.3");
    assert.ok(await login(owner, "user", "v@example.org", key));
    assert.equal(
      (await t.server.store.failures.list()).length,
      0,
      "no failure records",
    );
  } finally {
    await t.close();
  }
});

Deno.test("login: one source failing across many accounts is blocked for all of them", async () => {
  const t = await startTestServer();
  try {
    const { key } = await serverWithUser(t, "v@example.org");
    const attacker = await t.connectFrom("127.0.0.2");
    for (let i = 0; i < 20; i++) {
      assert.equal(
        await failOnce(attacker, `guess${i}@example.org`),
        ErrorCode.LOGIN_FAILED,
      );
    }
    assert.equal(
      await failOnce(attacker, "guess20@example.org"),
      ErrorCode.LOGIN_FAILED,
    );
    assert.equal(
      await codeOf(login(attacker, "user", "v@example.org", key)),
      ErrorCode.LOGIN_BLOCKED,
    );
    // Other sources are not affected.
    assert.ok(await login(await t.connect(), "user", "v@example.org", key));
  } finally {
    await t.close();
  }
});

/** What unknown and known accounts answer, without the per-request parts. */
async function shapes(
  client: AmtpClient,
  names: [string, string][],
): Promise<Record<string, unknown>[]> {
  const out = [];
  for (const [command, user] of names) {
    const answer = await client.call<Record<string, unknown>>(command, {
      user,
      server: "127.0.0.1",
    });
    out.push({
      user,
      algorithm: answer.algorithm,
      key_id: answer.key_id,
      length: (answer.verification_string as string | undefined)?.length,
      keys: Object.keys(answer).sort().join(","),
    });
  }
  return out;
}

Deno.test("login: decoys are the same across a restart", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "amtp-decoy-" });
  try {
    const names: [string, string][] = [
      ["admin_login_request", "admin"],
      ["admin_login_request", "root"],
      ["admin_login_request", "nobody"],
      ["user_login_request", "ghost@example.org"],
      ["user_login_request", "v@example.org"],
      ["user_login_request", "postmaster@example.org"],
    ];
    const first = await startTestServer({ AMTP_DATA: dataDir });
    let before;
    try {
      await serverWithUser(first, "v@example.org");
      before = await shapes(await first.connect(), names);
    } finally {
      await first.close();
    }
    const second = await startTestServer({ AMTP_DATA: dataDir });
    try {
      assert.deepEqual(await shapes(await second.connect(), names), before);
    } finally {
      await second.close();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("login: on a server whose accounts all hold RSA keys, unknown accounts answer RSA too", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "amtp-decoy-" });
  try {
    const first = await startTestServer({ AMTP_DATA: dataDir });
    try {
      const admin = await adminCaller(await first.connect(), first.dataDir);
      const adminKey = await makeKey("RSA-OAEP-256");
      const before = await admin("admin_set_admin", {
        name: "admin",
        add_key: {
          algorithm: adminKey.algorithm,
          public_key: adminKey.publicKey,
        },
      }) as { keys: { key_id: string }[] };
      await admin("admin_set_admin", {
        name: "admin",
        del_key: before.keys[0].key_id,
      });
      await admin("admin_add_domain", { domain: "example.org" });
      for (const name of ["a", "b", "c"]) {
        const key = await makeKey("RSA-OAEP-256");
        await admin("admin_add_user", {
          address: `${name}@example.org`,
          algorithm: key.algorithm,
          public_key: key.publicKey,
        });
      }
    } finally {
      await first.close();
    }
    // Keys are counted at start (and every hour).
    const second = await startTestServer({ AMTP_DATA: dataDir });
    try {
      const client = await second.connect();
      const [real] = await shapes(client, [[
        "user_login_request",
        "a@example.org",
      ]]);
      assert.equal(real.algorithm, "RSA-OAEP-256");
      const names: [string, string][] = [];
      for (let i = 0; i < 12; i++) {
        names.push([`user_login_request`, `nobody${i}@example.org`]);
        names.push([`admin_login_request`, `nobody${i}`]);
      }
      for (const decoy of await shapes(client, names)) {
        assert.equal(decoy.algorithm, "RSA-OAEP-256", String(decoy.user));
        assert.equal(decoy.length, real.length, String(decoy.user));
        assert.equal(decoy.keys, real.keys);
      }
    } finally {
      await second.close();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

/**
 * A phishing server at 127.0.0.2 (with a certificate the victim trusts, as
 * one for its own name would be) that relays every frame to the real server
 * and keeps any token that passes. `rewrite` makes it name the real server
 * in login requests.
 */
async function startRelay(
  t: TestServer,
  rewrite: boolean,
): Promise<
  { url: string; certPem: string; tokens: string[]; stop(): Promise<void> }
> {
  const cert = await createCertificate({ names: ["127.0.0.2"], days: 2 });
  const tokens: string[] = [];
  const server = Deno.serve({
    hostname: "127.0.0.2",
    port: 0,
    cert: cert.certPem,
    key: cert.keyPem,
    onListen() {},
  }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.binaryType = "arraybuffer";
    const upstream = new WebSocket(`wss://127.0.0.1:${t.server.port}/amtp`, {
      client: Deno.createHttpClient({
        caCerts: [t.server.certificate().certPem],
      }),
    } as unknown as string[]);
    upstream.binaryType = "arraybuffer";
    const ready = new Promise((resolve) => upstream.onopen = resolve);
    socket.onmessage = async (event) => {
      const doc = decodeDocument(new Uint8Array(event.data));
      if (rewrite && String(doc.command).endsWith("_login_request")) {
        doc.server = "127.0.0.1";
      }
      await ready;
      upstream.send(encodeDocument(doc));
    };
    upstream.onmessage = (event) => {
      const doc = decodeDocument(new Uint8Array(event.data));
      const data = doc.data as Record<string, unknown> | undefined;
      for (const field of ["admin_token", "user_token"]) {
        if (typeof data?.[field] === "string") tokens.push(data[field]);
      }
      socket.send(event.data);
    };
    socket.onclose = () => upstream.close();
    upstream.onclose = () => {
      if (socket.readyState === WebSocket.OPEN) socket.close();
    };
    return response;
  });
  return {
    url: `wss://127.0.0.2:${server.addr.port}/amtp`,
    certPem: cert.certPem,
    tokens,
    stop: () => server.shutdown(),
  };
}

for (const algorithm of LOGIN_ALGORITHMS) {
  Deno.test(`login: a phishing server relaying the real server's ${algorithm} challenge gets no token`, async () => {
    const t = await startTestServer();
    const relays = [await startRelay(t, false), await startRelay(t, true)];
    try {
      const admin = await adminCaller(await t.connect(), t.dataDir);
      await admin("admin_add_domain", { domain: "example.org" });
      const key = await makeKey(algorithm);
      await admin("admin_add_user", {
        address: "victim@example.org",
        algorithm,
        public_key: key.publicKey,
      });
      const outcomes = [];
      for (const relay of relays) {
        // The victim's client verifies the phishing server's certificate.
        const victim = await AmtpClient.connect({
          url: relay.url,
          caCerts: [relay.certPem],
          keepAliveMs: 0,
        });
        try {
          await victim.login("user", "victim@example.org", key);
          outcomes.push("token");
        } catch (error) {
          outcomes.push(
            error instanceof AmtpError
              ? error.code
              : error instanceof ChallengeRefused
              ? "refused"
              : String(error),
          );
        } finally {
          victim.close();
        }
        assert.deepEqual(relay.tokens, [], "the relay saw no token");
      }
      // Naming itself, the relay is refused; naming the real server, its
      // challenge does not open (decryption) or verify (signature).
      assert.deepEqual(outcomes, [
        ErrorCode.WRONG_SERVER,
        algorithm === "Ed25519" ? ErrorCode.LOGIN_FAILED : "refused",
      ]);
      // The same victim logs in directly.
      assert.ok(
        await login(await t.connect(), "user", "victim@example.org", key),
      );
    } finally {
      for (const relay of relays) await relay.stop();
      await t.close();
    }
  });
}
