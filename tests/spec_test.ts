/**
 * What an independent implementer found unspecified or wrong, each against a
 * real server: requestIDs echoed with their exact BSON type, plain HTTP
 * answers, malformed frames described in protocol terms, binary subtypes,
 * several accounts on one session, and a DNS server that fails.
 */

import assert from "node:assert/strict";
import dgram from "node:dgram";
import { Binary, BSON, Double, Int32, Long } from "bson";
import type { Push } from "../client/mod.ts";
import { openWebSocket } from "../client/transport.ts";
import { ErrorCode } from "../core/protocol/mod.ts";
import { exactRequestId } from "../core/wire/mod.ts";
import {
  login,
  makeKey,
  startTestServer,
  type TestServer,
  waitFor,
} from "../testing/helpers.ts";
import { mailWorld } from "../testing/mail.ts";

/** A raw WebSocket session: frames out, whole frames back, nothing decoded. */
async function raw(t: TestServer) {
  const transport = await openWebSocket({
    url: `wss://127.0.0.1:${t.server.port}/amtp`,
    caCerts: [t.server.certificate().certPem],
  });
  const frames: Uint8Array[] = [];
  let ended = false;
  (async () => {
    for await (const frame of transport.frames()) frames.push(frame);
    ended = true;
  })();
  return {
    send: (doc: Record<string, unknown>) => transport.send(BSON.serialize(doc)),
    sendBytes: (bytes: Uint8Array) => transport.send(bytes),
    async next(): Promise<Record<string, unknown>> {
      await waitFor(() => frames.length > 0, 5000, "a frame");
      // Wrapped values: the types exactly as they came.
      return BSON.deserialize(frames.shift()!, { promoteValues: false });
    },
    get ended() {
      return ended;
    },
    close: () => transport.close(),
  };
}

Deno.test("spec §3: a requestID comes back with its exact BSON type and value", async () => {
  const t = await startTestServer();
  try {
    const s = await raw(t);
    const beyond = Long.fromString("9007199254740993"); // 2^53 + 1
    const cases: [string, unknown, (v: unknown) => boolean][] = [
      ["int32", new Int32(7), (v) => v instanceof Int32 && v.value === 7],
      [
        "int64 2^40",
        Long.fromNumber(2 ** 40),
        (v) => v instanceof Long && v.equals(Long.fromNumber(2 ** 40)),
      ],
      [
        "int64 beyond 2^53",
        beyond,
        (v) => v instanceof Long && v.equals(beyond),
      ],
      [
        "int64 that fits in int32",
        Long.fromNumber(5),
        (v) => v instanceof Long && v.toNumber() === 5,
      ],
      [
        "double 1.0",
        new Double(1),
        (v) => v instanceof Double && v.value === 1,
      ],
      ["string", "abc", (v) => v === "abc"],
    ];
    for (const [what, id, same] of cases) {
      await s.send({ command: "ping", requestID: id });
      const response = await s.next();
      assert.equal(
        (response.error as Int32).value,
        0,
        `${what}: ${response.message}`,
      );
      assert.ok(same(response.requestID), `${what}: ${response.requestID}`);
    }
    // A type the spec does not allow is refused without a requestID.
    await s.send({ command: "ping", requestID: true });
    const refused = await s.next();
    assert.equal((refused.error as Int32).value, ErrorCode.MALFORMED);
    assert.equal(refused.requestID, undefined);
    s.close();
  } finally {
    await t.close();
  }
});

Deno.test("spec §3: exactRequestId reads the last requestID past every element type", () => {
  const frame = BSON.serialize({
    a: "x",
    b: { c: [1, 2] },
    bin: new Binary(new Uint8Array(3)),
    d: new Date(0),
    n: null,
    f: 1.5,
    requestID: new Int32(1),
    l: Long.fromNumber(3),
  });
  assert.deepEqual(exactRequestId(frame), new Int32(1));
  assert.equal(exactRequestId(BSON.serialize({ requestID: "s" })), undefined);
  assert.ok(
    exactRequestId(BSON.serialize({ requestID: new Double(2) })) instanceof
      Double,
  );
});

Deno.test("spec §1: only GET / is a page; /nope and a plain GET /amtp are 404", async () => {
  const t = await startTestServer();
  const client = Deno.createHttpClient({
    caCerts: [t.server.certificate().certPem],
  });
  try {
    const base = `https://127.0.0.1:${t.server.port}`;
    const home = await fetch(`${base}/`, { client });
    assert.equal(home.status, 200);
    assert.match(await home.text(), /connect to \/amtp/);
    for (const path of ["/nope", "/amtp", "/amtp/x"]) {
      const response = await fetch(`${base}${path}`, { client });
      await response.body?.cancel();
      assert.equal(response.status, 404, path);
    }
  } finally {
    client.close();
    await t.close();
  }
});

Deno.test("spec §2: a malformed frame is described in protocol terms, and binary subtype 4 is refused", async () => {
  const t = await startTestServer();
  try {
    const s = await raw(t);
    // The length field says 16, the WebSocket message holds 15 bytes.
    const short = new Uint8Array(15);
    short[0] = 16;
    await s.sendBytes(short);
    const lying = await s.next();
    assert.equal((lying.error as Int32).value, ErrorCode.MALFORMED);
    assert.equal(
      lying.message,
      "malformed BSON document: the length field says 16 bytes, the frame has 15",
    );
    // A string whose bytes are not UTF-8.
    const bad = BSON.serialize({ command: "ping", text: "aa" });
    bad[bad.length - 3] = 0xff;
    await s.sendBytes(bad);
    const utf8 = await s.next();
    assert.equal((utf8.error as Int32).value, ErrorCode.MALFORMED);
    assert.doesNotMatch(String(utf8.message), /buffer|===|bson size/i);
    assert.match(String(utf8.message), /UTF-8/);
    await s.send({
      command: "ping",
      requestID: 9,
      blob: new Binary(new Uint8Array(16), 4),
    });
    const subtype = await s.next();
    assert.equal((subtype.error as Int32).value, ErrorCode.MALFORMED);
    assert.match(String(subtype.message), /subtype 4/);
    // The session goes on.
    await s.send({ command: "ping", requestID: 10 });
    assert.equal(((await s.next()).error as Int32).value, 0);
    s.close();
  } finally {
    await t.close();
  }
});

Deno.test("spec §3.1: one session acts for two users, receives both users' pushes, each named, until a token is revoked", async () => {
  const w = await mailWorld();
  try {
    const carol = await w.session("carol@example.org");
    // Create alice and bob, then log both in on ONE new session.
    await w.session("alice@example.org");
    const bob = await w.session("bob@example.org");
    const both = await w.t.connect();
    const pushes: Push[] = [];
    both.onPush((p) => pushes.push(p));
    // A second key each (the world keeps the first), logged in on `both`.
    const tokens = [];
    for (const address of ["alice@example.org", "bob@example.org"]) {
      const key = await makeKey();
      await w.admin("admin_set_user", {
        address,
        add_key: { algorithm: key.algorithm, public_key: key.publicKey },
      });
      tokens.push(await login(both, "user", address, key));
    }
    const [aliceToken, bobToken] = tokens;
    assert.notEqual(aliceToken, bobToken);
    for (const to of ["alice@example.org", "bob@example.org"]) {
      await carol.call("send", { to: [to], subject: `for ${to}`, body: "b" });
    }
    await waitFor(
      () => pushes.filter((p) => p.event === "message_new").length === 2,
      5000,
      "both users' pushes on one session",
    );
    assert.deepEqual(
      pushes.filter((p) => p.event === "message_new").map((p) => [
        p.account,
        (p.data as { subject: string }).subject,
      ]).sort(),
      [
        ["alice@example.org", "for alice@example.org"],
        ["bob@example.org", "for bob@example.org"],
      ],
    );
    // Bob logs out on this session: his pushes stop, Alice's go on.
    await both.call("user_logout", { user_token: bobToken });
    pushes.length = 0;
    await carol.call("send", {
      to: ["bob@example.org"],
      subject: "2",
      body: "",
    });
    await carol.call("send", {
      to: ["alice@example.org"],
      subject: "3",
      body: "",
    });
    await waitFor(
      () => pushes.some((p) => p.account === "alice@example.org"),
      5000,
      "alice's push",
    );
    assert.equal(
      pushes.filter((p) => p.account === "bob@example.org").length,
      0,
    );
    // Bob's own session still gets his.
    await waitFor(
      () =>
        bob.pushes.some((p) =>
          p.event === "message_new" &&
          (p.data as { subject: string }).subject === "2"
        ),
      5000,
      "bob's push on his own session",
    );
    both.close();
  } finally {
    await w.t.close();
  }
});

/** A name server that answers every query with `rcode` (2 SERVFAIL, 5 REFUSED). */
function failingDns(
  rcode: number,
): Promise<{ address: string; close(): void }> {
  const socket = dgram.createSocket("udp4");
  socket.on("message", (query: Uint8Array, peer) => {
    const answer = new Uint8Array(query);
    answer[2] = 0x81; // QR, RD
    answer[3] = 0x80 | rcode; // RA, the code
    answer.fill(0, 6, 12); // no answer, authority or additional records
    socket.send(answer, peer.port, peer.address);
  });
  return new Promise((resolve) =>
    socket.bind(0, "127.0.0.1", () =>
      resolve({
        address: `127.0.0.1:${socket.address().port}`,
        close: () => socket.close(),
      }))
  );
}

for (const [name, rcode] of [["SERVFAIL", 2], ["REFUSED", 5]] as const) {
  Deno.test(`spec §14.1: a DNS server answering ${name} is a temporary failure (505, queued), not a bounce`, async () => {
    const dns = await failingDns(rcode);
    const w = await mailWorld({
      AMTP_DNS: dns.address,
      AMTP_FEDERATION_RETRY: "3600",
    });
    try {
      const alice = await w.session("alice@example.org");
      const sent = await alice.call<
        { recipients: { address: string; status: string }[] }
      >("send", { to: ["bob@remote.test"], subject: "Hi", body: "b" });
      assert.equal(sent.recipients[0].status, "queued");
      let item: Record<string, unknown> | undefined;
      await waitFor(
        async () => {
          const queue = await w.admin("admin_get_queue");
          item = (queue.items as Record<string, unknown>[])[0];
          return item !== undefined && Number(item.attempts) >= 1;
        },
        10_000,
        "the first delivery attempt",
      );
      assert.match(String(item!.last_error), /505|did not answer/);
      // No bounce: nothing came back to Alice.
      const inbox = await alice.call<{ messages: unknown[] }>("list", {});
      assert.equal(inbox.messages.length, 0);
    } finally {
      await w.t.close();
      dns.close();
    }
  });
}

Deno.test("spec §3.1: a session whose token was deleted from another device (a stolen laptop) stops receiving the user's pushes at once", async () => {
  const w = await mailWorld();
  try {
    const carol = await w.session("carol@example.org");
    const laptop = await w.session("alice@example.org");
    const phone = await w.session("alice@example.org", {
      transport: "websocket",
    });
    // The phone deletes the laptop's session.
    const { sessions } = await laptop.client.call<
      { sessions: { session_id: string; current: boolean }[] }
    >("user_get_sessions", { user_token: laptop.token });
    const stolen = sessions.find((s) => s.current)!.session_id;
    await phone.client.call("user_del_session", {
      user_token: phone.token,
      session_id: stolen,
    });
    laptop.pushes.length = 0;
    await carol.call("send", {
      to: ["alice@example.org"],
      subject: "private",
      body: "for Alice only",
    });
    await waitFor(
      () => phone.pushes.some((p) => p.event === "message_new"),
      5000,
      "the phone's push",
    );
    assert.deepEqual(
      laptop.pushes.filter((p) => p.event === "message_new"),
      [],
      "the stolen session still receives mail summaries",
    );
  } finally {
    await w.t.close();
  }
});
