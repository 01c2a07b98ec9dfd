/**
 * The server over real loopback sockets: WebTransport (QUIC) and WebSocket,
 * framing, the envelope, pipelining, malformed input and limits.
 */

import assert from "node:assert/strict";
import { MIGRATIONS } from "../kv/mod.ts";
import { encodeDocument } from "../core/wire/mod.ts";
import { ErrorCode } from "../core/protocol/mod.ts";
import type { Response } from "../client/mod.ts";
import { startTestServer, waitFor } from "../testing/helpers.ts";

const TRANSPORTS = ["webtransport", "websocket"] as const;

for (const transport of TRANSPORTS) {
  Deno.test(`${transport}: ping and info answer with the requestID echoed`, async () => {
    const t = await startTestServer();
    try {
      const client = await t.connect({ transport });
      const pong = await client.request("ping", { requestID: "ignored" });
      assert.equal(pong.error, 0);
      assert.equal(pong.command, "ping");
      assert.equal((pong.data as { pong: boolean }).pong, true);
      const info = await client.call<Record<string, unknown>>("info");
      assert.equal(info.app_name, "AMTP Deno Server");
      assert.deepEqual(info.login_algorithms, [
        "Ed25519",
        "HPKE-X25519",
        "RSA-OAEP-256",
      ]);
      const limits = info.limits as Record<string, number>;
      assert.equal(limits.max_frame, 1048576);
      // The transfer rates a client paces its transfers to (the defaults).
      assert.equal(limits.transfer_rate, 8 * 1024 * 1024);
      assert.equal(limits.transfer_rate_user, 16 * 1024 * 1024);
      assert.equal(info.certificate_sha256, t.server.certSha256());
    } finally {
      await t.close();
    }
  });

  Deno.test(`${transport}: 1,000 pipelined requests all answered and matched`, async () => {
    const t = await startTestServer();
    try {
      const client = await t.connect({ transport });
      const requests = Array.from(
        { length: 1000 },
        (_, i) =>
          i % 2 === 0 ? client.request("ping") : client.request(`no_such_${i}`),
      );
      const responses = await Promise.all(requests);
      responses.forEach((response, i) => {
        if (i % 2 === 0) {
          assert.equal(response.command, "ping");
          assert.equal(response.error, 0);
        } else {
          assert.equal(response.command, `no_such_${i}`);
          assert.equal(response.error, ErrorCode.UNKNOWN_COMMAND);
        }
      });
      const ids = new Set(responses.map((r) => r.requestID));
      assert.equal(ids.size, 1000);
    } finally {
      await t.close();
    }
  });

  Deno.test(`${transport}: malformed frames get their code, the session and others go on`, async () => {
    const t = await startTestServer();
    try {
      const bad = await t.connect({ transport });
      const other = await t.connect({ transport });
      const strays: Response[] = [];
      bad.onStray((r) => strays.push(r));
      // A valid length with garbage inside: the frame boundary holds.
      const garbage = crypto.getRandomValues(new Uint8Array(40));
      garbage.set([40, 0, 0, 0]);
      garbage[39] = 0;
      await bad.sendRaw(garbage);
      await waitFor(() => strays.length === 1, 5000, "malformed answer");
      assert.equal(strays[0].error, ErrorCode.MALFORMED);
      assert.equal(strays[0].requestID, undefined);
      assert.match(strays[0].message ?? "", /malformed/);
      // No command, an unusable requestID, a mistyped parameter.
      const noCommand = await bad.request("", {});
      assert.equal(noCommand.error, ErrorCode.MALFORMED);
      const strangeId = encodeDocument({
        command: "ping",
        requestID: { a: 1 },
      });
      await bad.sendRaw(strangeId);
      await waitFor(() => strays.length === 2, 5000, "bad requestID answer");
      assert.equal(strays[1].error, ErrorCode.MALFORMED);
      const mistyped = await bad.request("admin_login_request", { user: 42 });
      assert.equal(mistyped.error, ErrorCode.INVALID_PARAMETER);
      assert.match(mistyped.message ?? "", /"user"/);
      const missing = await bad.request("admin_login_request", {});
      assert.equal(missing.error, ErrorCode.INVALID_PARAMETER);
      // Still serving both sessions.
      assert.equal((await bad.request("ping")).error, 0);
      assert.equal((await other.request("ping")).error, 0);
    } finally {
      await t.close();
    }
  });

  Deno.test(`${transport}: an oversized frame is refused and only that session closes`, async () => {
    const t = await startTestServer({ AMTP_MAX_FRAME: "4096" });
    try {
      const bad = await t.connect({ transport });
      const other = await t.connect({ transport });
      const strays: Response[] = [];
      bad.onStray((r) => strays.push(r));
      let closed = false;
      bad.closed.then(() => closed = true);
      if (transport === "webtransport") {
        // Only the length prefix: the server must refuse without waiting for 1 GiB.
        await bad.sendRaw(new Uint8Array([0, 0, 0, 0x40]));
      } else {
        const big = new Uint8Array(8192);
        big.set([0, 0x20, 0, 0]);
        await bad.sendRaw(big);
      }
      await waitFor(() => strays.length === 1, 5000, "frame too large answer");
      assert.equal(strays[0].error, ErrorCode.FRAME_TOO_LARGE);
      await waitFor(() => closed, 5000, "session close");
      assert.equal((await other.request("ping")).error, 0);
      assert.ok(t.logs.some((l) => l.includes("frame_refused")));
    } finally {
      await t.close();
    }
  });

  Deno.test(`${transport}: the rate limit answers RATE_LIMITED beyond the burst`, async () => {
    const t = await startTestServer({ AMTP_RATE_LIMIT: "5" });
    try {
      const client = await t.connect({ transport });
      const responses = await Promise.all(
        Array.from({ length: 40 }, () => client.request("ping")),
      );
      const limited = responses.filter((r) =>
        r.error === ErrorCode.RATE_LIMITED
      );
      const ok = responses.filter((r) => r.error === 0);
      assert.ok(limited.length >= 20, `limited ${limited.length}`);
      assert.ok(ok.length >= 10 && ok.length <= 12, `ok ${ok.length}`);
      assert.equal((limited[0].data as { retry_after: number }).retry_after, 1);
    } finally {
      await t.close();
    }
  });

  Deno.test(`${transport}: sessions per IP are limited`, async () => {
    const t = await startTestServer({ AMTP_MAX_SESSIONS_PER_IP: "2" });
    try {
      const a = await t.connect({ transport });
      const b = await t.connect({ transport });
      const third = t.connect({ transport }).then(
        async (c) =>
          (await c.request("ping", {}).catch(() => null))?.error ?? -1,
        () => -1,
      );
      assert.equal(await third, -1);
      assert.ok(t.logs.some((l) => l.includes("connection_refused")));
      assert.equal((await a.request("ping")).error, 0);
      b.close();
      await waitFor(
        async () => {
          try {
            const c = await t.connect({ transport });
            return (await c.request("ping")).error === 0;
          } catch {
            return false;
          }
        },
        5000,
        "a place after a close",
      );
    } finally {
      await t.close();
    }
  });

  Deno.test(`${transport}: an idle session is closed`, async () => {
    const t = await startTestServer({ AMTP_IDLE_TIMEOUT: "1" });
    try {
      const client = await t.connect({ transport });
      assert.equal((await client.request("ping")).error, 0);
      let closed = false;
      client.closed.then(() => closed = true);
      await waitFor(() => closed, 5000, "idle close");
      assert.ok(t.logs.some((l) => l.includes("session_idle")));
    } finally {
      await t.close();
    }
  });
}

Deno.test("websocket: text messages are refused", async () => {
  const t = await startTestServer();
  try {
    const client = await t.connect({ transport: "websocket" });
    const ws = new WebSocket(`wss://127.0.0.1:${t.server.port}/amtp`, {
      client: Deno.createHttpClient({
        caCerts: [t.server.certificate().certPem],
      }),
    } as unknown as string[]);
    ws.binaryType = "arraybuffer";
    await new Promise((resolve) => ws.onopen = resolve);
    const answer = new Promise<MessageEvent>((resolve) =>
      ws.onmessage = resolve
    );
    const closed = new Promise((resolve) => ws.onclose = resolve);
    ws.send('{"command":"ping"}');
    const { BSON } = await import("bson");
    const doc = BSON.deserialize(new Uint8Array((await answer).data));
    assert.equal(doc.error, ErrorCode.MALFORMED);
    await closed;
    assert.equal((await client.request("ping")).error, 0);
  } finally {
    await t.close();
  }
});

Deno.test("shutdown: in-flight sessions are closed and the KV is released", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "amtp-test-" });
  const t = await startTestServer({ AMTP_DATA: dataDir });
  const client = await t.connect();
  assert.equal((await client.request("ping")).error, 0);
  let closed = false;
  client.closed.then(() => closed = true);
  await t.server.close();
  await waitFor(() => closed, 5000, "client close on shutdown");
  // The KV file can be opened again, with the data intact.
  const kv = await Deno.openKv(`${dataDir}/amtp.kv`);
  assert.equal(
    (await kv.get(["meta", "schema"])).value,
    MIGRATIONS.at(-1)!.version,
  );
  kv.close();
  await Deno.remove(dataDir, { recursive: true });
});
