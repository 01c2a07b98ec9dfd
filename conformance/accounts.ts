/**
 * Requirements of sections 7 (login), 9 (admin commands) and 10 (user
 * commands).
 *
 * @module
 */

import type { LoginAlgorithm } from "../shared/login/algorithms.ts";
import { AmtpError, type LoginChallenge } from "../client/mod.ts";
import { answerChallenge } from "../shared/login/answer.ts";
import { expect, expectEqual, show, type Suite } from "./harness.ts";
import { makeKey, type UserSession, type World } from "./world.ts";

async function code(promise: Promise<unknown>): Promise<number> {
  try {
    await promise;
    return 0;
  } catch (error) {
    if (error instanceof AmtpError) return error.code;
    throw error;
  }
}

/** Sections 7, 9 and 10. */
export async function accountChecks(
  suite: Suite,
  world: World,
  sessions: UserSession[],
) {
  const algorithms = world.info.login_algorithms as LoginAlgorithm[];
  for (const algorithm of algorithms) {
    await suite.check(
      "7.2",
      "MUST",
      `a user logs in with an ${algorithm} key: challenge, proof, token`,
      async () => {
        const user = await world.addUser(
          `login-${algorithm.toLowerCase().replace(/[^a-z0-9]/g, "")}`,
          algorithm,
        );
        const s = await world.session(user);
        const info = await s.call<{ address: string }>("user_serverinfo");
        expectEqual(info.address, user.address, "user_serverinfo.address");
        expect(/^[0-9a-f]{64}$/.test(s.token), `token ${s.token}`);
      },
    );
  }
  await suite.check(
    "7.1",
    "MUST",
    "a key of an algorithm not announced is refused with 104; a key that does not parse with 105",
    async () => {
      const key = await makeKey("Ed25519");
      expectEqual(
        await code(world.admin("admin_add_user", {
          address: world.address("bad-alg"),
          algorithm: "DSA-1024",
          public_key: key.publicKey,
        })),
        104,
        "unknown algorithm",
      );
      expectEqual(
        await code(world.admin("admin_add_user", {
          address: world.address("bad-key"),
          algorithm: "Ed25519",
          public_key: new Uint8Array(44).fill(7),
        })),
        105,
        "garbage key",
      );
    },
  );
  const victim = await world.addUser("login-victim");
  const client = await world.connect();
  const request = (kind: "user" | "admin", user: string, server: string) =>
    client.request(`${kind}_login_request`, {
      user,
      server,
      key_id: victim.key.keyId,
    });
  await suite.check(
    "7.2",
    "MUST",
    "a login request naming another server is refused with 106 and data.hostname",
    async () => {
      const response = await request(
        "user",
        victim.address,
        "elsewhere.example",
      );
      expectEqual(response.error, 106, "error");
      expect(
        typeof (response.data as { hostname?: unknown })?.hostname === "string",
        "data.hostname",
      );
    },
  );
  await suite.check(
    "7.2",
    "MUST",
    "a challenge answers nonce (32 bytes), key_id, algorithm and expires_in",
    async () => {
      const response = await request("user", victim.address, client.serverName);
      expectEqual(response.error, 0, "error");
      const data = response.data as Record<string, unknown>;
      expect(
        data.nonce instanceof Uint8Array && data.nonce.byteLength === 32,
        `nonce ${show(data.nonce)}`,
      );
      expectEqual(data.key_id, victim.key.keyId, "key_id");
      expectEqual(data.algorithm, victim.key.algorithm, "algorithm");
      expect(Number.isInteger(data.expires_in), "expires_in");
    },
  );
  await suite.check(
    "7.2",
    "MUST",
    "an unknown account gets a challenge of the same shape (a decoy), not an error",
    async () => {
      const response = await request(
        "user",
        world.address("no-such-user"),
        client.serverName,
      );
      expectEqual(response.error, 0, "error");
      const data = response.data as Record<string, unknown>;
      expect(
        data.nonce instanceof Uint8Array && typeof data.key_id === "string" &&
          typeof data.algorithm === "string",
        `data ${show(data)}`,
      );
    },
  );
  const challenge = async (on = client) =>
    await on.call<LoginChallenge>("user_login_request", {
      user: victim.address,
      server: on.serverName,
      key_id: victim.key.keyId,
    });
  const prove = (c: LoginChallenge, on = client) =>
    answerChallenge(victim.key, c, {
      kind: "user",
      account: victim.address,
      server: on.serverName,
    });
  await suite.check(
    "7.2",
    "MUST",
    "a wrong proof is refused with 100",
    async () => {
      await challenge();
      world.failedLogins++;
      const response = await client.request("user_login_verify", {
        user: victim.address,
        signature: new Uint8Array(64),
        client_nonce: new Uint8Array(32),
      });
      expectEqual(response.error, 100, "error");
    },
  );
  await suite.check(
    "7.2",
    "MUST",
    "a challenge is single-use: the same proof a second time is refused with 100",
    async () => {
      const proof = await prove(await challenge());
      const first = await client.request("user_login_verify", {
        user: victim.address,
        ...proof,
      });
      expectEqual(first.error, 0, "first answer");
      const second = await client.request("user_login_verify", {
        user: victim.address,
        ...proof,
      });
      expectEqual(second.error, 100, "second answer");
    },
  );
  await suite.check(
    "7.2",
    "MUST",
    "a challenge is bound to its session: answered on another, it is refused with 100",
    async () => {
      const c = await challenge();
      const other = await world.connect();
      const response = await other.request("user_login_verify", {
        user: victim.address,
        ...await prove(c),
      });
      expectEqual(response.error, 100, "error");
    },
  );
  await suite.check(
    "7.5",
    "MUST",
    "a user token for an admin command is error 6, an admin token for a user command too; none is 5",
    async () => {
      const s = await world.session(victim);
      expectEqual(
        (await s.client.request("admin_get_domains", { user_token: s.token }))
          .error,
        6,
        "user token, admin command",
      );
      expectEqual(
        (await s.client.request("user_serverinfo", {
          admin_token: world.adminToken,
        })).error,
        6,
        "admin token, user command",
      );
      expectEqual(
        (await s.client.request("user_serverinfo")).error,
        5,
        "no token",
      );
    },
  );
  await suite.check(
    "7.5",
    "MUST",
    "a token revoked by logout is error 5 at its next use",
    async () => {
      const s = await world.session(victim);
      expect(
        (await s.call<{ logged_out: boolean }>("user_logout")).logged_out,
        "logged_out",
      );
      expectEqual((await s.request("user_serverinfo")).error, 5, "error");
    },
  );
  await suite.check(
    "7.4",
    "SHOULD",
    "after more than 5 wrong answers from one source an account is blocked there: 102 with data.retry_after",
    async () => {
      const target = await world.addUser("blocked");
      const on = await world.connect();
      let last = 0;
      let data: unknown;
      for (let i = 0; i < 8 && last !== 102; i++) {
        const asked = await on.request("user_login_request", {
          user: target.address,
          server: on.serverName,
        });
        if (asked.error === 102) {
          last = 102;
          data = asked.data;
          break;
        }
        world.failedLogins++;
        const answered = await on.request("user_login_verify", {
          user: target.address,
          signature: new Uint8Array(64),
          client_nonce: new Uint8Array(32),
        });
        last = answered.error;
        data = answered.data;
      }
      await world.liftOwnBlocks();
      expectEqual(last, 102, "error after 8 wrong answers");
      expect(
        Number((data as { retry_after?: unknown })?.retry_after) > 0,
        `retry_after ${show(data)}`,
      );
    },
  );

  // Section 9.
  const domain = world.domain;
  await suite.check(
    "9",
    "MUST",
    "admin commands need admin_token: without one error 5",
    async () => {
      const anon = await world.connect();
      expectEqual((await anon.request("admin_get_domains")).error, 5, "error");
    },
  );
  await suite.check(
    "9",
    "MUST",
    "admin_sysinfo answers the draft's fields",
    async () => {
      const info = await world.admin("admin_sysinfo");
      for (
        const name of [
          "app_name",
          "app_version",
          "os_name",
          "hostname",
          "uptime",
        ]
      ) {
        expect(info[name] !== undefined, `${name} missing`);
      }
    },
  );
  await suite.check(
    "9",
    "MUST",
    "domains: add (202 when taken), get, set, list with paging; cursor absent on the last page",
    async () => {
      const extra = `second-${domain}`;
      const added = await world.admin<Record<string, unknown>>(
        "admin_add_domain",
        { domain: extra, description: "x" },
      );
      try {
        expectEqual(added.name, extra, "name");
        expect(added.created instanceof Date, "created");
        expectEqual(
          await code(world.admin("admin_add_domain", { domain: extra })),
          202,
          "again",
        );
        const set = await world.admin<Record<string, unknown>>(
          "admin_set_domain",
          { domain: extra, description: "y", registration_open: false },
        );
        expectEqual(set.description, "y", "description");
        const first = await world.admin<
          { domains: { name: string }[]; cursor?: string }
        >(
          "admin_get_domains",
          { search: domain, limit: 1 },
        );
        expectEqual(first.domains.length, 1, "first page");
        expect(first.cursor, "no cursor after a full first page");
        const second = await world.admin<
          { domains: { name: string }[]; cursor?: string }
        >(
          "admin_get_domains",
          { search: domain, limit: 1, cursor: first.cursor },
        );
        expectEqual(second.domains.length, 1, "second page");
        expect(
          second.domains[0].name !== first.domains[0].name,
          "a page repeats the first",
        );
        // Two domains match: the second page is the last.
        expect(second.cursor === undefined, "a cursor on the last page");
      } finally {
        await world.admin("admin_del_domain", { domain: extra, force: true });
      }
    },
  );
  await suite.check(
    "9",
    "MUST",
    "add_user on a domain not hosted is 208; an unknown user is 201",
    async () => {
      const key = await makeKey("Ed25519");
      expectEqual(
        await code(world.admin("admin_add_user", {
          address: `someone@not-hosted-${domain}`,
          algorithm: key.algorithm,
          public_key: key.publicKey,
        })),
        208,
        "add_user",
      );
      expectEqual(
        await code(
          world.admin("admin_del_user", { address: world.address("nobody") }),
        ),
        201,
        "del_user",
      );
    },
  );
  const staff = await world.addUser("staff");
  await suite.check(
    "9",
    "MUST",
    "users: the record has address, name, disabled, quota, keys, created, updated; set and list work",
    async () => {
      const set = await world.admin<Record<string, unknown>>("admin_set_user", {
        address: staff.address,
        name: "Staff",
        quota: 12345,
      });
      expectEqual(set.name, "Staff", "name");
      expectEqual(set.quota, 12345, "quota");
      expectEqual(set.disabled, false, "disabled");
      const keys = set.keys as Record<string, unknown>[];
      expectEqual(keys[0]?.key_id, staff.key.keyId, "key id");
      expect(keys[0]?.public_key instanceof Uint8Array, "public_key");
      expect(
        set.created instanceof Date && set.updated instanceof Date,
        "dates",
      );
      const list = await world.admin<{ users: { address: string }[] }>(
        "admin_get_users",
        { domain, search: "staff" },
      );
      expect(
        list.users.some((u) => u.address === staff.address),
        "not listed",
      );
    },
  );
  await suite.check(
    "9",
    "MUST",
    "the last key of an account cannot be removed (205)",
    async () => {
      expectEqual(
        await code(world.admin("admin_set_user", {
          address: staff.address,
          del_key: staff.key.keyId,
        })),
        205,
        "error",
      );
    },
  );
  await suite.check(
    "9",
    "MUST",
    "disabling a user revokes its tokens (5 at their next use)",
    async () => {
      const user = await world.addUser("to-disable");
      const s = await world.session(user);
      await world.admin("admin_set_user", {
        address: user.address,
        disabled: true,
      });
      expectEqual((await s.request("user_serverinfo")).error, 5, "error");
    },
  );
  await suite.check(
    "9",
    "MUST",
    "aliases: add, get, set, delete; a loop is 204; an unknown local recipient is 201; 101 recipients is 206",
    async () => {
      const alias = world.address("team");
      const made = await world.admin<{ address: string; recipients: string[] }>(
        "admin_add_alias",
        { address: alias, recipients: [staff.address], description: "d" },
      );
      expectEqual(show(made.recipients), show([staff.address]), "recipients");
      expectEqual(
        await code(world.admin("admin_add_alias", {
          address: world.address("loop"),
          recipients: [world.address("loop")],
        })),
        204,
        "loop",
      );
      expectEqual(
        await code(world.admin("admin_add_alias", {
          address: world.address("to-nobody"),
          recipients: [world.address("nobody")],
        })),
        201,
        "unknown recipient",
      );
      expectEqual(
        await code(world.admin("admin_add_alias", {
          address: world.address("many"),
          recipients: Array.from(
            { length: 101 },
            (_, i) => `r${i}@remote-${domain}`,
          ),
        })),
        206,
        "101 recipients",
      );
      await world.admin("admin_set_alias", {
        address: alias,
        recipients: [staff.address, `x@remote-${domain}`],
      });
      const list = await world.admin<
        { aliases: { address: string; recipients: string[] }[] }
      >(
        "admin_get_aliases",
        { domain },
      );
      expectEqual(
        list.aliases.find((a) => a.address === alias)?.recipients.length,
        2,
        "recipients after set",
      );
      await world.admin("admin_del_alias", { address: alias });
      expectEqual(
        await code(world.admin("admin_del_alias", { address: alias })),
        201,
        "deleted twice",
      );
    },
  );
  await suite.check(
    "9",
    "MUST",
    "catch-all: set, get, and off with an empty list",
    async () => {
      await world.admin("admin_set_catchall", {
        domain,
        recipients: [staff.address],
      });
      const got = await world.admin<{ recipients: string[] }>(
        "admin_get_catchall",
        { domain },
      );
      expectEqual(show(got.recipients), show([staff.address]), "recipients");
      await world.admin("admin_set_catchall", { domain, recipients: [] });
      expectEqual(
        (await world.admin<{ recipients: string[] }>("admin_get_catchall", {
          domain,
        })).recipients.length,
        0,
        "after turning it off",
      );
    },
  );
  await suite.check(
    "9",
    "MUST",
    "a domain with users is not deleted without force (203 with data.users, data.aliases)",
    async () => {
      const response = await world.adminRequest("admin_del_domain", { domain });
      expectEqual(response.error, 203, "error");
      const data = response.data as Record<string, unknown>;
      expect(
        Number.isInteger(data?.users) && Number.isInteger(data?.aliases),
        `data ${show(data)}`,
      );
    },
  );
  await suite.check(
    "9",
    "MUST",
    "admins: add, list, set, log in as the new admin, delete",
    async () => {
      const name = `conf${world.domain.slice(12, 20)}`;
      const key = await makeKey("Ed25519");
      world.madeAdmin(name);
      const made = await world.admin<{ name: string; keys: unknown[] }>(
        "admin_add_admin",
        { name, algorithm: key.algorithm, public_key: key.publicKey },
      );
      expectEqual(made.name, name, "name");
      const other = await world.connect();
      const { token } = await other.login("admin", name, key);
      expect(token, "no token");
      const list = await world.admin<{ admins: { name: string }[] }>(
        "admin_get_admins",
        { search: name },
      );
      expect(list.admins.some((a) => a.name === name), "not listed");
      const set = await world.admin<{ disabled: boolean }>("admin_set_admin", {
        name,
        disabled: true,
      });
      expectEqual(set.disabled, true, "disabled");
      expectEqual(
        (await other.request("admin_get_domains", { admin_token: token }))
          .error,
        5,
        "the disabled admin's token",
      );
      await world.admin("admin_del_admin", { name });
    },
  );
  await suite.check(
    "9",
    "MUST",
    "blocks: listed with scope, id, failures, and lifted by admin_del_block (201 for none)",
    async () => {
      const { blocks } = await world.admin<
        { blocks: Record<string, unknown>[] }
      >(
        "admin_get_blocks",
      );
      for (const b of blocks) {
        expect(
          ["account", "ip", "account_ip"].includes(String(b.scope)) &&
            typeof b.id === "string",
          `block ${show(b)}`,
        );
      }
      expectEqual(
        await code(world.admin("admin_del_block", {
          scope: "account",
          id: `user:${world.address("never-blocked")}`,
        })),
        201,
        "no such block",
      );
    },
  );
  await suite.check(
    "9",
    "MUST",
    "queue and DNS commands answer their shapes; an unknown queue item is 201",
    async () => {
      const queue = await world.admin<{ items: unknown[] }>("admin_get_queue", {
        domain: `remote-${domain}`,
      });
      expect(Array.isArray(queue.items), "items");
      expectEqual(
        await code(
          world.admin("admin_retry_queue", { id: "conformance-none" }),
        ),
        201,
        "retry",
      );
      expectEqual(
        await code(world.admin("admin_del_queue", { id: "conformance-none" })),
        201,
        "del",
      );
      const reports = await world.admin<{ reports: unknown[] }>(
        "admin_get_policy_reports",
      );
      expect(Array.isArray(reports.reports), "reports");
    },
  );
  await suite.check(
    "12.4",
    "MUST",
    "admin_get_modules lists every module version with its status",
    async () => {
      const { modules } = await world.admin<
        { modules: Record<string, unknown>[] }
      >(
        "admin_get_modules",
      );
      for (const m of world.info.modules as { name: string }[]) {
        expect(
          modules.some((s) => s.name === m.name && typeof s.state === "string"),
          `${m.name} missing`,
        );
      }
    },
  );

  // Section 10.
  const me = await world.session(staff);
  sessions.push(me);
  await suite.check(
    "10",
    "MUST",
    "user_serverinfo names the token's user and its quota",
    async () => {
      const info = await me.call<Record<string, unknown>>("user_serverinfo");
      expectEqual(info.address, staff.address, "address");
      expect(Number.isInteger(info.quota), `quota ${show(info.quota)}`);
      expect(typeof info.limits === "object", "limits");
    },
  );
  await suite.check(
    "10",
    "MUST",
    "a profile has every field: name, photo and photo_type null without a photo, public_keys",
    async () => {
      const other = await world.addUser("profile-plain");
      const profile = await me.call<Record<string, unknown>>("user_userinfo", {
        address: other.address,
      });
      expectEqual(profile.address, other.address, "address");
      expectEqual(profile.name, "", "name");
      expectEqual(profile.photo, null, "photo");
      expectEqual(profile.photo_type, null, "photo_type");
      expect(Array.isArray(profile.public_keys), "public_keys");
      expectEqual(
        await code(
          me.call("user_userinfo", { address: world.address("nobody") }),
        ),
        201,
        "unknown user",
      );
    },
  );
  await suite.check(
    "10",
    "MUST",
    "set_profile: a name and a photo; a photo over 48 KiB is 206",
    async () => {
      const photo = new Uint8Array([137, 80, 78, 71, 13, 10, 26, 10, 1, 2]);
      const set = await me.call<Record<string, unknown>>("user_set_profile", {
        name: "Staff Member",
        photo,
        photo_type: "image/png",
      });
      expectEqual(set.name, "Staff Member", "name");
      expectEqual(set.photo_type, "image/png", "photo_type");
      expectEqual(
        await code(me.call("user_set_profile", {
          photo: new Uint8Array(48 * 1024 + 1),
          photo_type: "image/png",
        })),
        206,
        "large photo",
      );
      const removed = await me.call<Record<string, unknown>>(
        "user_set_profile",
        {
          remove_photo: true,
        },
      );
      expectEqual(removed.photo, null, "photo after removal");
    },
  );
  await suite.check(
    "10",
    "MUST",
    "public keys for end-to-end encryption: add (key_id), shown in the profile, delete",
    async () => {
      const { key_id } = await me.call<{ key_id: string }>(
        "user_add_public_key",
        {
          algorithm: "conformance-test",
          key: new Uint8Array(32).fill(1),
          label: "test",
        },
      );
      const profile = await me.call<
        { public_keys: { key_id: string; key: unknown }[] }
      >(
        "user_userinfo",
        { address: staff.address, fresh: true },
      );
      const published = profile.public_keys.find((k) => k.key_id === key_id);
      expect(published?.key instanceof Uint8Array, "not in the profile");
      await me.call("user_del_public_key", { key_id });
      expectEqual(
        await code(me.call("user_del_public_key", { key_id })),
        201,
        "deleted twice",
      );
    },
  );
  await suite.check(
    "10",
    "MUST",
    "login keys: list, add another (202 when the same), remove it; the last one stays (205)",
    async () => {
      const extra = await makeKey(
        algorithms.includes("HPKE-X25519") ? "HPKE-X25519" : "Ed25519",
      );
      const added = await me.call<{ key_id: string }>("user_add_key", {
        algorithm: extra.algorithm,
        public_key: extra.publicKey,
        key_label: "second",
      });
      expectEqual(added.key_id, extra.keyId, "key_id");
      expectEqual(
        await code(me.call("user_add_key", {
          algorithm: extra.algorithm,
          public_key: extra.publicKey,
        })),
        202,
        "the same key again",
      );
      const { keys } = await me.call<{ keys: { key_id: string }[] }>(
        "user_get_keys",
      );
      expectEqual(keys.length, 2, "keys");
      await me.call("user_del_key", { key_id: extra.keyId });
      expectEqual(
        await code(me.call("user_del_key", { key_id: staff.key.keyId })),
        205,
        "the last key",
      );
    },
  );
  await suite.check(
    "10",
    "MUST",
    "sessions: listed with the current one marked; deleting one revokes its token",
    async () => {
      const second = await world.session(staff);
      const { sessions: list } = await me.call<
        { sessions: { session_id: string; current: boolean }[] }
      >("user_get_sessions");
      expectEqual(list.filter((s) => s.current).length, 1, "current sessions");
      const mine = list.find((s) => s.current)!;
      expect(/^[0-9a-f]{16}$/.test(mine.session_id), "session_id");
      const theirs = (await second.call<
        { sessions: { session_id: string; current: boolean }[] }
      >("user_get_sessions")).sessions.find((s) => s.current)!;
      await me.call("user_del_session", { session_id: theirs.session_id });
      expectEqual(
        (await second.request("user_serverinfo")).error,
        5,
        "revoked",
      );
      expectEqual(
        await code(me.call("user_del_session", { session_id: "0".repeat(16) })),
        201,
        "unknown session",
      );
    },
  );
}
