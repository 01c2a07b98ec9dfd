/**
 * Invitations (PROTOCOL.md §8.1, §9.1, §10.1) on a real server: an admin's
 * one-time code lets the invited person's own device create the account
 * with its own key; a code works once, not after its expiry, and guessing
 * codes from one source is blocked as failed logins are.
 */

import assert from "node:assert/strict";
import { ErrorCode } from "../core/protocol/mod.ts";
import {
  adminCaller,
  login,
  makeKey,
  startTestServer,
  type TestServer,
} from "../testing/helpers.ts";
import type { AmtpClient } from "../client/mod.ts";
import { runCli, startServerProcess } from "../testing/process.ts";

interface World {
  t: TestServer;
  client: AmtpClient;
  admin: (
    command: string,
    params?: Record<string, unknown>,
  ) => Promise<Record<string, unknown>>;
  clock: { now: number };
}

async function world(env: Record<string, string> = {}): Promise<World> {
  const clock = { now: Date.now() };
  const t = await startTestServer(env, { now: () => clock.now });
  const client = await t.connect();
  const admin = await adminCaller(client, t.dataDir);
  await admin("admin_add_domain", { domain: "example.org" });
  return { t, client, admin, clock };
}

async function invite(
  w: World,
  address: string,
  params: Record<string, unknown> = {},
): Promise<string> {
  const made = await w.admin("admin_add_invitation", { address, ...params });
  assert.match(String(made.code), /^[a-z2-7]{5}(-[a-z2-7]{5}){4}$/);
  return made.code as string;
}

Deno.test("invitations: the invited device registers its own key; the code works once, and only one of two racing uses wins", async () => {
  const w = await world();
  try {
    const code = await invite(w, "alice@example.org", { name: "Alice" });
    const info = await w.client.call<Record<string, unknown>>(
      "invitation_info",
      { code },
    );
    assert.equal(info.address, "alice@example.org");
    assert.equal(info.kind, "account");
    // The code is shown once: lists carry only its id.
    const listed = await w.admin("admin_get_invitations") as {
      invitations: Record<string, unknown>[];
    };
    assert.equal(listed.invitations.length, 1);
    assert.equal(JSON.stringify(listed).includes(code.slice(0, 5)), false);

    const key = await makeKey();
    const other = await makeKey();
    // Two devices race with the same code: exactly one account, one key.
    const stranger = await w.t.connect();
    const [a, b] = await Promise.all([
      w.client.request("invitation_accept", {
        code,
        algorithm: key.algorithm,
        public_key: key.publicKey,
        key_label: "alice's browser",
      }),
      stranger.request("invitation_accept", {
        code: code.toUpperCase(),
        algorithm: other.algorithm,
        public_key: other.publicKey,
      }),
    ]);
    const won = [a, b].filter((r) => r.error === 0);
    assert.equal(won.length, 1, JSON.stringify([a, b]));
    const lost = a.error === 0 ? b : a;
    assert.ok(
      ([ErrorCode.NOT_FOUND, ErrorCode.ALREADY_EXISTS] as number[]).includes(
        lost.error,
      ),
      JSON.stringify(lost),
    );
    const winner = a.error === 0 ? key : other;
    const user = await w.admin("admin_get_users") as {
      users: { address: string; name: string; keys: unknown[] }[];
    };
    assert.equal(user.users.length, 1);
    assert.equal(user.users[0].name, "Alice");
    assert.equal(user.users[0].keys.length, 1);
    // The new account logs in with the key its own device made.
    const token = await login(w.client, "user", "alice@example.org", winner);
    assert.ok(token);

    // Used up: every later use is refused, whatever key comes with it.
    const again = await w.client.request("invitation_accept", {
      code,
      algorithm: key.algorithm,
      public_key: (await makeKey()).publicKey,
    });
    assert.equal(again.error, ErrorCode.NOT_FOUND);
    const gone = await w.client.request("invitation_info", { code });
    assert.equal(gone.error, ErrorCode.NOT_FOUND);
    assert.deepEqual(
      (await w.admin("admin_get_invitations")).invitations,
      [],
    );

    // A device invitation of the user adds a second login key.
    const made = await w.client.call<{ code: string }>(
      "user_add_invitation",
      { user_token: token },
    );
    const user2 = await w.t.connect();
    const phone = await makeKey();
    const added = await user2.call<Record<string, unknown>>(
      "invitation_accept",
      {
        code: made.code,
        algorithm: phone.algorithm,
        public_key: phone.publicKey,
      },
    );
    assert.equal(added.kind, "device");
    assert.ok(await login(user2, "user", "alice@example.org", phone));
  } finally {
    await w.t.close();
  }
});

Deno.test("invitations: a code past its expiry is refused and creates nothing", async () => {
  const w = await world();
  try {
    const code = await invite(w, "bob@example.org", { expires_in: 60 });
    w.clock.now += 61_000;
    const key = await makeKey();
    const late = await w.client.request("invitation_accept", {
      code,
      algorithm: key.algorithm,
      public_key: key.publicKey,
    });
    assert.equal(late.error, ErrorCode.NOT_FOUND, JSON.stringify(late));
    assert.equal(
      (await w.client.request("invitation_info", { code })).error,
      ErrorCode.NOT_FOUND,
    );
    const users = await w.admin("admin_get_users") as { users: unknown[] };
    assert.equal(users.users.length, 0);
    // Out-of-range lifetimes are parameter errors.
    await assert.rejects(
      w.admin("admin_add_invitation", {
        address: "c@example.org",
        expires_in: 10,
      }),
      (e: { code?: number }) => e.code === ErrorCode.INVALID_PARAMETER,
    );
  } finally {
    await w.t.close();
  }
});

Deno.test("invitations: a new invitation for an address withdraws the earlier one, and only for that address", async () => {
  const w = await world();
  try {
    const first = await w.admin("admin_add_invitation", {
      address: "dora@example.org",
    });
    const other = await invite(w, "erik@example.org");
    assert.deepEqual(first.replaced, []);
    const second = await w.admin("admin_add_invitation", {
      address: "dora@example.org",
    });
    const firstId = (first.invitation as { id: string }).id;
    assert.deepEqual(second.replaced, [firstId]);
    // The first code no longer works; the new one and erik's still do.
    assert.equal(
      (await w.client.request("invitation_info", { code: first.code })).error,
      ErrorCode.NOT_FOUND,
    );
    for (const code of [second.code, other]) {
      assert.equal(
        (await w.client.request("invitation_info", { code })).error,
        0,
      );
    }
    const listed = await w.admin("admin_get_invitations") as {
      invitations: { address: string }[];
    };
    assert.deepEqual(
      listed.invitations.map((i) => i.address).sort(),
      ["dora@example.org", "erik@example.org"],
    );
  } finally {
    await w.t.close();
  }
});

Deno.test("invitations: guessing codes from one source is blocked like failed logins, even a right code meanwhile", async () => {
  const w = await world();
  try {
    const code = await invite(w, "carol@example.org");
    const guesser = await w.t.connect();
    const key = await makeKey();
    const wrong = () =>
      Array.from(
        crypto.getRandomValues(new Uint8Array(25)),
        (b) => "abcdefghijklmnopqrstuvwxyz234567"[b & 31],
      ).join("");
    let blocked = 0;
    for (let i = 0; i < 8; i++) {
      const r = await guesser.request(
        i % 2 ? "invitation_info" : "invitation_accept",
        { code: wrong(), algorithm: key.algorithm, public_key: key.publicKey },
      );
      if (r.error === ErrorCode.LOGIN_BLOCKED) blocked++;
      else assert.equal(r.error, ErrorCode.NOT_FOUND, JSON.stringify(r));
    }
    assert.ok(blocked >= 2, `the source was blocked (${blocked} refusals)`);
    // While blocked, even the right code is refused (guessing gains nothing).
    const right = await guesser.request("invitation_info", { code });
    assert.equal(right.error, ErrorCode.LOGIN_BLOCKED);
    assert.ok((right.data as { retry_after: number }).retry_after > 0);
    // The block is one of the admin's blocks, and ends with time.
    const blocks = await w.admin("admin_get_blocks") as {
      blocks: { id: string }[];
    };
    assert.ok(blocks.blocks.length > 0);
    w.clock.now += 3_600_000;
    const later = await guesser.call<Record<string, unknown>>(
      "invitation_accept",
      { code, algorithm: key.algorithm, public_key: key.publicKey },
    );
    assert.equal(later.address, "carol@example.org");
  } finally {
    await w.t.close();
  }
});

Deno.test("invitations: the CLI invites, and the invited machine redeems the code with a key it made itself", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-cli-invite-" });
  const server = await startServerProcess(cwd, { AMTP_PORT: "0" });
  const admin = { AMTP_DATA: `${cwd}/data`, AMTP_CLI_STATE: `${cwd}/a.json` };
  // The invited person: another config folder, no session, no admin key.
  const invited = {
    AMTP_DATA: `${cwd}/data`,
    AMTP_CLI_STATE: `${cwd}/other/b.json`,
  };
  const ok = async (env: Record<string, string>, ...args: string[]) => {
    const r = await runCli(args, env, cwd);
    assert.equal(r.code, 0, `amtp ${args.join(" ")}\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  };
  try {
    const at = `127.0.0.1:${server.port}`;
    await ok(
      admin,
      "login",
      "--admin",
      "admin",
      "--key",
      "data/admin.key",
      "--server",
      at,
    );
    await ok(admin, "admin", "add-domain", "example.org");
    const made = await ok(
      admin,
      "admin",
      "invite",
      "dana@example.org",
      "--name",
      "Dana",
      "--expires",
      "3600",
    );
    const code = made.match(/[a-z2-7]{5}(-[a-z2-7]{5}){4}/)?.[0];
    assert.ok(code, made);
    assert.match(await ok(admin, "admin", "invitations"), /dana@example\.org/);
    await ok(invited, "keygen", "dana");
    assert.match(
      await ok(invited, "accept", code, "--key", "dana", "--server", at),
      /dana@example\.org/,
    );
    // Used up.
    const again = await runCli(
      ["accept", code, "--key", "dana", "--server", at],
      invited,
      cwd,
    );
    assert.notEqual(again.code, 0);
    assert.match(
      again.stdout + again.stderr,
      /201|NOT_FOUND|no such invitation/,
    );
    // Dana logs in with the key her machine made.
    assert.match(
      await ok(
        invited,
        "login",
        "--user",
        "dana@example.org",
        "--key",
        "dana",
        "--server",
        at,
      ),
      /dana@example\.org/,
    );
  } finally {
    await server.stop();
    await Deno.remove(cwd, { recursive: true });
  }
});
