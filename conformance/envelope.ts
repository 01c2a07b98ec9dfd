/**
 * Requirements of sections 3 (envelope, accounts on a session), 5 (limits),
 * 6 (identities) and 8 (commands without login).
 *
 * @module
 */

import { Double, Int32, Long } from "bson";
import { expect, expectEqual, show, Skip, type Suite } from "./harness.ts";
import { openRawWebSocket } from "./raw.ts";
import { makeKey, type UserSession, type World } from "./world.ts";

const num = (value: unknown) =>
  typeof value === "number" ? value : (value as Int32 | undefined)?.value;

/** Sections 3, 5, 6 and 8. */
export async function envelopeChecks(
  suite: Suite,
  world: World,
  sessions: UserSession[],
) {
  const target = world.options.target;
  await suite.check(
    "3",
    "MUST",
    "a response carries the command, the requestID and error (int32) 0, and no message on success",
    async () => {
      const ws = await openRawWebSocket(target);
      ws.send({ command: "ping", requestID: "r-1" });
      const doc = await ws.nextDocument();
      expect(doc, "no answer");
      expectEqual(doc.command, "ping", "command");
      expectEqual(doc.requestID, "r-1", "requestID");
      expect(
        doc.error instanceof Int32 && doc.error.value === 0,
        `error ${show(doc.error)}`,
      );
      expect(doc.message === undefined, "message on success");
      ws.close();
    },
  );
  await suite.check(
    "3",
    "MUST",
    "a requestID comes back with its BSON type and value: int32, int64 (2^40, 2^53+1), double, string",
    async () => {
      const ws = await openRawWebSocket(target);
      const cases: [string, unknown, (v: unknown) => boolean][] = [
        ["int32 7", new Int32(7), (v) => v instanceof Int32 && v.value === 7],
        [
          "int64 2^40",
          Long.fromNumber(2 ** 40),
          (v) => v instanceof Long && v.equals(Long.fromNumber(2 ** 40)),
        ],
        [
          "int64 2^53+1",
          Long.fromString("9007199254740993"),
          (v) =>
            v instanceof Long && v.equals(Long.fromString("9007199254740993")),
        ],
        [
          "int64 5",
          Long.fromNumber(5),
          (v) => v instanceof Long && v.toNumber() === 5,
        ],
        [
          "double 1.0",
          new Double(1),
          (v) => v instanceof Double && v.value === 1,
        ],
        [
          "double 2.5",
          new Double(2.5),
          (v) => v instanceof Double && v.value === 2.5,
        ],
        ["string", "x".repeat(128), (v) => v === "x".repeat(128)],
      ];
      for (const [what, id, same] of cases) {
        ws.send({ command: "ping", requestID: id });
        const doc = await ws.nextDocument();
        expect(doc, `${what}: no answer`);
        expect(
          same(doc.requestID),
          `${what}: came back as ${show(doc.requestID)} (${
            (doc.requestID as { _bsontype?: string })?._bsontype ??
              typeof doc.requestID
          })`,
        );
      }
      ws.close();
    },
  );
  await suite.check(
    "3",
    "MUST",
    "a requestID of another type (a boolean, a string over 128 characters) is error 1 without requestID",
    async () => {
      const ws = await openRawWebSocket(target);
      for (const id of [true, "x".repeat(129)]) {
        ws.send({ command: "ping", requestID: id });
        const doc = await ws.nextDocument();
        expect(doc, "no answer");
        expectEqual(num(doc.error), 1, `error for ${show(id)}`);
        expect(doc.requestID === undefined, "requestID present");
      }
      ws.close();
    },
  );
  await suite.check(
    "3",
    "MUST",
    "a request without a command string is error 1",
    async () => {
      const ws = await openRawWebSocket(target);
      ws.send({ requestID: 3 });
      const doc = await ws.nextDocument();
      expect(doc, "no answer");
      expectEqual(num(doc.error), 1, "error");
      expect(
        typeof doc.message === "string" && doc.message.length > 0,
        "no message",
      );
      ws.close();
    },
  );
  await suite.check(
    "3",
    "MUST",
    "unknown parameters are ignored",
    async () => {
      const client = await world.connect();
      const data = await client.call<{ pong: boolean }>("ping", {
        conformance_unknown: { nested: [1, "x"] },
      });
      expectEqual(data.pong, true, "pong");
    },
  );
  await suite.check(
    "3",
    "MUST",
    "pipelined requests are all answered once, matched by requestID",
    async () => {
      const client = await world.connect();
      const answers = await Promise.all(
        Array.from(
          { length: 200 },
          (_, i) => client.request(i % 2 ? "ping" : "info", { n: i }),
        ),
      );
      expect(answers.every((a) => a.error === 0), "an error");
      expect(
        answers.every((a, i) => a.command === (i % 2 ? "ping" : "info")),
        "a response to the wrong request",
      );
    },
  );
  await suite.check(
    "4",
    "MUST",
    "an unknown command is error 3 with a message",
    async () => {
      const client = await world.connect();
      const response = await client.request("conformance_no_such_command");
      expectEqual(response.error, 3, "error");
      expect(typeof response.message === "string", "no message");
    },
  );
  await suite.check(
    "4",
    "MUST",
    "a missing parameter is error 4 naming it in data.parameter",
    async () => {
      const response = await world.adminRequest("admin_add_domain", {});
      expectEqual(response.error, 4, "error");
      expectEqual(
        (response.data as { parameter?: string })?.parameter,
        "domain",
        "data.parameter",
      );
    },
  );
  await suite.check(
    "4",
    "MUST",
    "more requests per second than rate_limit (beyond its burst) get error 7 with data.retry_after",
    async () => {
      const rate = (world.info.limits as { rate_limit: number }).rate_limit;
      if (rate > 2000) {
        throw new Skip(
          `rate_limit is ${rate}/s; the suite sends at most 10,000`,
        );
      }
      const ws = await openRawWebSocket(target);
      const count = rate * 5;
      for (let i = 0; i < count; i++) {
        ws.send({ command: "ping", requestID: i });
      }
      let limited: Record<string, unknown> | undefined;
      for (let i = 0; i < count; i++) {
        const doc = await ws.nextDocument(10_000);
        if (!doc) break;
        if (num(doc.error) === 7) limited ??= doc;
      }
      ws.close();
      expect(limited, `${count} pings at once and none was limited`);
      const retry = (limited.data as { retry_after?: unknown })?.retry_after;
      expect(
        num(retry) !== undefined && num(retry)! > 0,
        `retry_after ${show(retry)}`,
      );
    },
  );

  // Section 3.1: several users on one session.
  const viaExample = world.hasModule("example");
  const viaMail = world.hasModule("messages");
  /** Make the server push to `user`: the example's ping_me from the user's own session, or mail. */
  const pushTo = async (own: UserSession, sender?: UserSession) => {
    if (viaExample) {
      await own.client.call("ping_me", {
        module: "example",
        user_token: own.token,
        text: "conformance",
      });
    } else {
      await sender!.mail("send", {
        to: [own.address],
        subject: "push",
        body: "",
      });
    }
  };
  const event = viaExample ? "example_pinged" : "message_new";
  await suite.check(
    "3.1",
    "MUST",
    "one session bound to two users receives both users' pushes, each naming its account, without requestID",
    async () => {
      if (!viaExample && !viaMail) {
        throw new Skip(
          "the server offers neither the example nor the messages module",
        );
      }
      const [a, b, c] = await Promise.all(
        ["multi-a", "multi-b", "multi-c"].map((l) => world.addUser(l)),
      );
      const both = await world.connect();
      const onBoth = await world.session(a, { client: both });
      await world.session(b, { client: both });
      const ownA = await world.session(a);
      const ownB = await world.session(b);
      const sender = viaExample ? undefined : await world.session(c);
      sessions.push(ownA, ownB, ...(sender ? [sender] : []));
      await pushTo(ownA, sender);
      await pushTo(ownB, sender);
      await waitFor(
        () => onBoth.pushes.filter((p) => p.event === event).length >= 2,
        5000,
      );
      const accounts = onBoth.pushes.filter((p) => p.event === event).map((p) =>
        p.account
      ).sort();
      expectEqual(
        show(accounts),
        show([a.address, b.address].sort()),
        "accounts",
      );
      expect(
        onBoth.pushes.every((p) =>
          p.requestID === undefined && p.command === undefined
        ),
        "a push with requestID or command",
      );
    },
  );
  await suite.check(
    "3.1",
    "MUST",
    "a user whose token is logged out on a session gets no more pushes there; the other user still does",
    async () => {
      if (!viaExample && !viaMail) {
        throw new Skip(
          "the server offers neither the example nor the messages module",
        );
      }
      const [a, b, c] = await Promise.all(
        ["unbind-a", "unbind-b", "unbind-c"].map((l) => world.addUser(l)),
      );
      const both = await world.connect();
      const onBoth = await world.session(a, { client: both });
      const bOnBoth = await world.session(b, { client: both });
      const ownA = await world.session(a);
      const ownB = await world.session(b);
      const sender = viaExample ? undefined : await world.session(c);
      sessions.push(ownA, ownB, ...(sender ? [sender] : []));
      await bOnBoth.call("user_logout");
      await pushTo(ownB, sender);
      await pushTo(ownA, sender);
      await waitFor(() => ownB.pushes.some((p) => p.event === event), 5000);
      await waitFor(
        () => onBoth.pushes.some((p) => p.account === a.address),
        5000,
      );
      expect(
        !onBoth.pushes.some((p) => p.account === b.address),
        "the logged-out user's push arrived",
      );
    },
  );

  await suite.check(
    "5",
    "MUST",
    "info.limits reports max_frame, rate_limit, max_inflight, idle_timeout and max_page as int32s",
    () => {
      const limits = world.info.limits as Record<string, unknown>;
      for (
        const name of [
          "max_frame",
          "rate_limit",
          "max_inflight",
          "idle_timeout",
          "max_page",
        ]
      ) {
        expect(
          Number.isInteger(limits?.[name]) && (limits[name] as number) > 0,
          `${name}: ${show(limits?.[name])}`,
        );
      }
    },
  );
  await suite.check(
    "5",
    "MUST",
    "a limit above max_page is error 4, not cut",
    async () => {
      const max = (world.info.limits as { max_page: number }).max_page;
      const response = await world.adminRequest("admin_get_domains", {
        limit: max + 1,
      });
      expectEqual(response.error, 4, "error");
    },
  );
  await suite.check(
    "6",
    "MUST",
    "addresses are normalised to lowercase in answers",
    async () => {
      const user = await world.admin<{ address: string }>("admin_add_user", {
        address: `Mixed.Case@${world.domain.toUpperCase()}`,
        algorithm: "Ed25519",
        public_key: (await makeKey("Ed25519")).publicKey,
      });
      expectEqual(user.address, world.address("mixed.case"), "address");
    },
  );
  await suite.check(
    "6",
    "MUST",
    "an address breaking the rules is error 200 with data.rule",
    async () => {
      for (
        const address of [
          `a..b@${world.domain}`,
          `.a@${world.domain}`,
          `a@b`,
          `a!b@${world.domain}`,
        ]
      ) {
        const refused = await world.adminRequest("admin_add_alias", {
          address,
          recipients: [world.address("nobody")],
        });
        expectEqual(refused.error, 200, `${address}`);
        expect(
          typeof (refused.data as { rule?: unknown })?.rule === "string",
          `${address}: no data.rule`,
        );
      }
    },
  );
  await suite.check(
    "6",
    "MUST",
    "an internationalised domain is stored as punycode",
    async () => {
      const tag = world.domain.split(".")[0].slice(-8);
      const domain = await world.admin<{ name: string }>("admin_add_domain", {
        domain: `příklad-${tag}.test`,
      });
      try {
        expect(domain.name.startsWith("xn--"), `name ${domain.name}`);
      } finally {
        await world.admin("admin_del_domain", {
          domain: domain.name,
          force: true,
        });
      }
    },
  );

  await suite.check(
    "8",
    "MUST",
    "ping answers pong true and the server's time as a datetime",
    async () => {
      const client = await world.connect();
      const data = await client.call<{ pong: unknown; time: unknown }>("ping");
      expectEqual(data.pong, true, "pong");
      expect(data.time instanceof Date, `time ${show(data.time)}`);
    },
  );
  await suite.check(
    "8",
    "MUST",
    "info has every field with its type; a module's default is a string or absent",
    () => {
      const info = world.info;
      for (
        const name of [
          "app_name",
          "app_version",
          "hostname",
          "certificate_sha256",
        ]
      ) {
        expect(typeof info[name] === "string", `${name}: ${show(info[name])}`);
      }
      expectEqual(info.protocol_version, 1, "protocol_version");
      expect(
        /^[0-9a-f]{64}$/.test(String(info.certificate_sha256)),
        "certificate_sha256 is not 64 lowercase hex digits",
      );
      const algorithms = info.login_algorithms as unknown[];
      expect(
        Array.isArray(algorithms) && algorithms.length > 0 &&
          algorithms.every((a) => typeof a === "string"),
        `login_algorithms ${show(algorithms)}`,
      );
      for (const m of info.modules as Record<string, unknown>[]) {
        expect(typeof m.name === "string", "module name");
        expect(
          Array.isArray(m.versions) && m.versions.length > 0,
          `${m.name}: versions`,
        );
        expect(
          m.default === undefined ||
            (typeof m.default === "string" &&
              (m.versions as string[]).includes(m.default)),
          `${m.name}: default ${show(m.default)}`,
        );
      }
    },
  );
  await suite.check(
    "8",
    "MUST",
    "user_register is refused with 207 on a domain not open for registration, and registers on an open one",
    async () => {
      const key = await makeKey("Ed25519");
      const client = await world.connect();
      const params = {
        address: world.address("self-made"),
        algorithm: key.algorithm,
        public_key: key.publicKey,
      };
      expectEqual(
        (await client.request("user_register", params)).error,
        207,
        "closed domain",
      );
      await world.admin("admin_set_domain", {
        domain: world.domain,
        registration_open: true,
      });
      try {
        const made = await client.call<{ address: string; key_id: string }>(
          "user_register",
          params,
        );
        expectEqual(made.address, params.address, "address");
        expectEqual(made.key_id, key.keyId, "key_id");
      } finally {
        await world.admin("admin_set_domain", {
          domain: world.domain,
          registration_open: false,
        });
      }
    },
  );
}

/** Poll until `check` holds, or fail after `ms`. */
export async function waitFor(check: () => boolean, ms: number): Promise<void> {
  const until = Date.now() + ms;
  while (!check()) {
    if (Date.now() > until) throw new Error(`not within ${ms / 1000} s`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
