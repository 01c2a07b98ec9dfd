/**
 * Connection hygiene before authentication, as attacks over raw sockets on
 * real running servers: stalled TLS and HTTP handshakes, oversized heads,
 * descriptor exhaustion, QUIC connections that never open a session,
 * WebSocket frames over the limit announced in their header, and a client
 * that pipelines requests for large responses without reading them.
 */

import assert from "node:assert/strict";
import { BSON } from "bson";
import { AmtpClient } from "../client/mod.ts";
import { ErrorCode } from "../core/protocol/mod.ts";
import {
  answerChallenge,
  type LoginChallenge,
} from "../shared/login/answer.ts";
import { decodeDocument, encodeDocument } from "../core/wire/mod.ts";
import {
  adminCaller,
  login,
  startTestServer,
  type TestServer,
  userMaker,
  waitFor,
} from "../testing/helpers.ts";
import { cleanEnv, taskArgs } from "../testing/process.ts";

/** Handshake timeout of the in-process servers here. */
const HANDSHAKE_MS = 300;

/** Resolves with true when `conn` is closed by the server within `ms`. */
async function closedWithin(conn: Deno.Conn, ms: number): Promise<boolean> {
  const buffer = new Uint8Array(64 * 1024);
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const result = await Promise.race([
      conn.read(buffer).catch(() => null),
      new Promise<"wait">((r) => setTimeout(() => r("wait"), end - Date.now())),
    ]);
    if (result === null) return true;
    if (result === "wait") return false;
  }
  return false;
}

/** Everything the server sends until it closes (or `ms` pass). */
async function readAll(conn: Deno.Conn, ms = 5000): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const buffer = new Uint8Array(64 * 1024);
  const end = Date.now() + ms;
  while (Date.now() < end) {
    const n = await Promise.race([
      conn.read(buffer).catch(() => null),
      new Promise<"wait">((r) => setTimeout(() => r("wait"), end - Date.now())),
    ]);
    if (n === null || n === "wait") break;
    parts.push(buffer.slice(0, n));
  }
  const out = new Uint8Array(parts.reduce((a, p) => a + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function tls(t: TestServer): Promise<Deno.TlsConn> {
  return Deno.connectTls({
    hostname: "127.0.0.1",
    port: t.server.port,
    caCerts: [t.server.certificate().certPem],
  });
}

async function write(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await conn.write(bytes.subarray(at));
}

const text = (s: string) => new TextEncoder().encode(s);

/** A raw WebSocket client: the upgrade by hand, then masked frames. */
async function rawWebSocket(
  port: number,
  certPem: string,
): Promise<{ conn: Deno.TlsConn; rest: Uint8Array }> {
  const conn = await Deno.connectTls({
    hostname: "127.0.0.1",
    port,
    caCerts: [certPem],
  });
  await write(
    conn,
    text(
      "GET /amtp HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n" +
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n" +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    ),
  );
  let got = new Uint8Array(0);
  const buffer = new Uint8Array(4096);
  while (true) {
    const n = await conn.read(buffer);
    if (n === null) throw new Error("closed during the upgrade");
    const next = new Uint8Array(got.length + n);
    next.set(got);
    next.set(buffer.subarray(0, n), got.length);
    got = next;
    const head = new TextDecoder().decode(got);
    const end = head.indexOf("\r\n\r\n");
    if (end >= 0) {
      assert.match(head, /^HTTP\/1.1 101 /);
      // The accept value of RFC 6455's own example key.
      assert.match(head, /s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=/i);
      return { conn, rest: got.slice(end + 4) };
    }
  }
}

/** A client frame: FIN, opcode, masked payload. */
function clientFrame(
  opcode: number,
  payload: Uint8Array,
  options: { fin?: boolean; mask?: boolean } = {},
): Uint8Array {
  const mask = options.mask ?? true;
  const length = payload.length;
  const extra = length < 126 ? 0 : length < 65536 ? 2 : 8;
  const out = new Uint8Array(2 + extra + (mask ? 4 : 0) + length);
  out[0] = (options.fin ?? true ? 0x80 : 0) | opcode;
  const view = new DataView(out.buffer);
  if (extra === 0) out[1] = length;
  else if (extra === 2) {
    out[1] = 126;
    view.setUint16(2, length);
  } else {
    out[1] = 127;
    view.setBigUint64(2, BigInt(length));
  }
  let at = 2 + extra;
  if (mask) {
    out[1] |= 0x80;
    const key = [0x11, 0x22, 0x33, 0x44];
    out.set(key, at);
    at += 4;
    for (let i = 0; i < length; i++) out[at + i] = payload[i] ^ key[i & 3];
  } else {
    out.set(payload, at);
  }
  return out;
}

/** Server frames (unmasked) in `bytes`: opcode and payload. */
function serverFrames(
  bytes: Uint8Array,
): { opcode: number; payload: Uint8Array }[] {
  const frames = [];
  let at = 0;
  while (at + 2 <= bytes.length) {
    let length = bytes[at + 1] & 0x7f;
    let head = 2;
    const view = new DataView(bytes.buffer, bytes.byteOffset);
    if (length === 126) {
      length = view.getUint16(at + 2);
      head = 4;
    } else if (length === 127) {
      length = Number(view.getBigUint64(at + 2));
      head = 10;
    }
    if (at + head + length > bytes.length) break;
    frames.push({
      opcode: bytes[at] & 0x0f,
      payload: bytes.slice(at + head, at + head + length),
    });
    at += head + length;
  }
  return frames;
}

// --- TCP: TLS and HTTP handshakes ---------------------------------------

Deno.test("tcp: a connection that never starts TLS is closed after the handshake timeout", async () => {
  const t = await startTestServer({}, { handshakeTimeoutMs: HANDSHAKE_MS });
  const idle = await Deno.connect({
    hostname: "127.0.0.1",
    port: t.server.port,
  });
  try {
    assert.ok(await closedWithin(idle, 3000), "idle TCP connection still open");
    await waitFor(() => t.logs.some((l) => l.includes("tls_failed")));
  } finally {
    idle.close();
    await t.close();
  }
});

Deno.test("tcp: TLS done but no request head is answered 408 and closed", async () => {
  const t = await startTestServer({}, { handshakeTimeoutMs: HANDSHAKE_MS });
  const conn = await tls(t);
  try {
    await conn.handshake();
    // A head that never ends (slowloris).
    await write(conn, text("GET / HTTP/1.1\r\nHost: x\r\n"));
    const answer = new TextDecoder().decode(await readAll(conn, 3000));
    assert.match(answer, /^HTTP\/1.1 408 /);
  } finally {
    conn.close();
    await t.close();
  }
});

Deno.test("tcp: a request head over 8 KiB is answered 431 and closed", async () => {
  const t = await startTestServer({}, { handshakeTimeoutMs: 5000 });
  const conn = await tls(t);
  try {
    await write(
      conn,
      text(`GET / HTTP/1.1\r\nHost: x\r\nX-Pad: ${"a".repeat(9000)}\r\n\r\n`),
    );
    const answer = new TextDecoder().decode(await readAll(conn, 3000));
    assert.match(answer, /^HTTP\/1.1 431 /);
    assert.match(answer, /connection: close/i);
  } finally {
    conn.close();
    await t.close();
  }
});

Deno.test("tcp: plain HTTPS requests get the HTTP/1.1 responder's answers", async () => {
  const t = await startTestServer({}, { handshakeTimeoutMs: 5000 });
  const ask = async (request: string) => {
    const conn = await tls(t);
    try {
      await write(conn, text(request));
      return new TextDecoder().decode(await readAll(conn, 3000));
    } finally {
      conn.close();
    }
  };
  try {
    const page = await ask("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.match(page, /^HTTP\/1.1 200 OK\r\n/);
    assert.match(page, /connection: close/i);
    assert.match(page, /connect to \/amtp/);
    const head = await ask("HEAD / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert.match(head, /^HTTP\/1.1 200 OK\r\n/);
    assert.doesNotMatch(head, /connect to \/amtp/);
    assert.match(await ask("GARBAGE\r\n\r\n"), /^HTTP\/1.1 400 /);
    assert.match(
      await ask("GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
      /^HTTP\/1.1 505 /,
    );
    // An upgrade at /amtp without a valid key is refused, not upgraded.
    assert.match(
      await ask(
        "GET /amtp HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n" +
          "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n",
      ),
      /^HTTP\/1.1 400 /,
    );
    // A body over the limit.
    assert.match(
      await ask(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n",
      ),
      /^HTTP\/1.1 413 /,
    );
  } finally {
    await t.close();
  }
});

// --- WebSocket framing ----------------------------------------------------

Deno.test("websocket: a frame header claiming 60 MiB is refused with error 2 before any payload", async () => {
  const t = await startTestServer({}, { handshakeTimeoutMs: 5000 });
  const { conn } = await rawWebSocket(
    t.server.port,
    t.server.certificate().certPem,
  );
  try {
    // Header only: FIN + binary, masked, 64-bit length 60 MiB, masking key.
    const header = new Uint8Array(14);
    header[0] = 0x82;
    header[1] = 0xff;
    new DataView(header.buffer).setBigUint64(2, BigInt(60 * 1024 * 1024));
    header.set([1, 2, 3, 4], 10);
    await write(conn, header);
    const frames = serverFrames(await readAll(conn, 3000));
    assert.ok(frames.length >= 1, "no answer to the header");
    const doc = BSON.deserialize(frames[0].payload);
    assert.equal(doc.error, ErrorCode.FRAME_TOO_LARGE);
    assert.equal(frames.at(-1)!.opcode, 0x8, "no close frame");
    assert.ok(t.logs.some((l) => l.includes("frame_refused")));
  } finally {
    conn.close();
    await t.close();
  }
});

Deno.test("websocket: fragments are bounded in total, masking is required, pings are answered", async () => {
  const t = await startTestServer({ AMTP_MAX_FRAME: "4096" });
  const pem = t.server.certificate().certPem;
  try {
    // Ping -> pong with the same payload, then a request is answered.
    const a = await rawWebSocket(t.server.port, pem);
    await write(a.conn, clientFrame(0x9, text("hello")));
    const ping = encodeDocument({ command: "ping", requestID: 1 });
    await write(a.conn, clientFrame(0x2, ping));
    await write(a.conn, clientFrame(0x8, new Uint8Array([0x03, 0xe8])));
    const replies = serverFrames(await readAll(a.conn, 3000));
    assert.deepEqual(replies[0], { opcode: 0xa, payload: text("hello") });
    assert.equal(BSON.deserialize(replies[1].payload).error, 0);
    assert.equal(replies.at(-1)!.opcode, 0x8, "close answered");
    a.conn.close();

    // Three fragments of 2 KiB each: 6 KiB in total, over the 4 KiB limit.
    const b = await rawWebSocket(t.server.port, pem);
    const part = new Uint8Array(2048);
    await write(b.conn, clientFrame(0x2, part, { fin: false }));
    await write(b.conn, clientFrame(0x0, part, { fin: false }));
    await write(b.conn, clientFrame(0x0, part, { fin: false }));
    const refused = serverFrames(await readAll(b.conn, 3000));
    assert.equal(
      BSON.deserialize(refused[0].payload).error,
      ErrorCode.FRAME_TOO_LARGE,
    );
    b.conn.close();

    // An unmasked client frame breaks the protocol: error 1 and close.
    const c = await rawWebSocket(t.server.port, pem);
    await write(c.conn, clientFrame(0x2, ping, { mask: false }));
    const unmasked = serverFrames(await readAll(c.conn, 3000));
    assert.equal(
      BSON.deserialize(unmasked[0].payload).error,
      ErrorCode.MALFORMED,
    );
    assert.equal(unmasked.at(-1)!.opcode, 0x8);
    c.conn.close();
  } finally {
    await t.close();
  }
});

/** Requests over a raw WebSocket, reading only until each answer. */
class RawSession {
  #pending: Uint8Array = new Uint8Array(0);
  #nextId = 1;

  constructor(readonly conn: Deno.TlsConn, early: Uint8Array) {
    this.#pending = early;
  }

  async request(
    doc: Record<string, unknown>,
  ): Promise<Record<string, unknown>> {
    const requestID = this.#nextId++;
    await write(
      this.conn,
      clientFrame(0x2, encodeDocument({ ...doc, requestID })),
    );
    const buffer = new Uint8Array(64 * 1024);
    while (true) {
      const frames = serverFrames(this.#pending);
      for (const frame of frames) {
        const answer = decodeDocument(frame.payload);
        if (answer.requestID === requestID) {
          this.#pending = new Uint8Array(0);
          return answer;
        }
      }
      const n = await this.conn.read(buffer);
      if (n === null) throw new Error("closed");
      const next = new Uint8Array(this.#pending.length + n);
      next.set(this.#pending);
      next.set(buffer.subarray(0, n), this.#pending.length);
      this.#pending = next;
    }
  }
}

Deno.test("websocket: a session that does not read its pushes is closed as a slow consumer", async () => {
  const t = await startTestServer();
  let attacker: Deno.TlsConn | undefined;
  try {
    const admin = await adminCaller(await t.connect(), t.dataDir);
    await admin("admin_add_domain", { domain: "example.org" });
    const key = await userMaker(admin)("slow@example.org");
    const raw = await rawWebSocket(
      t.server.port,
      t.server.certificate().certPem,
    );
    attacker = raw.conn;
    const session = new RawSession(raw.conn, raw.rest);
    const challenge = await session.request({
      command: "user_login_request",
      user: "slow@example.org",
      server: "127.0.0.1",
      key_id: key.keyId,
    });
    const verified = await session.request({
      command: "user_login_verify",
      user: "slow@example.org",
      ...await answerChallenge(key, challenge.data as LoginChallenge, {
        kind: "user",
        account: "slow@example.org",
        server: "127.0.0.1",
      }),
    });
    assert.equal(verified.error, 0);
    // From now on the client reads nothing; pushes of 900 KiB keep coming.
    const data = new Uint8Array(900 * 1024);
    let delivered = 0;
    for (let i = 0; i < 100 && t.server.registry.size > 1; i++) {
      delivered += await t.server.registry.push(
        "slow@example.org",
        { event: "flood", data },
        1024 * 1024,
      );
      await new Promise((resolve) => setTimeout(resolve, 5));
    }
    assert.ok(
      t.logs.some((l) => l.includes("slow_consumer")),
      `no slow consumer after ${delivered} pushes`,
    );
    // The pushes that went out were bounded: 8 MiB queued, plus what the
    // kernel's socket buffers took.
    assert.ok(delivered < 60, `${delivered} pushes queued`);
    await waitFor(() => t.server.registry.size === 1, 5000, "session closed");
  } finally {
    attacker?.close();
    await t.close();
  }
});

// --- QUIC -------------------------------------------------------------------

Deno.test("quic: connections that never send the WebTransport CONNECT give their places back", async () => {
  const t = await startTestServer(
    { AMTP_MAX_SESSIONS_PER_IP: "2" },
    { handshakeTimeoutMs: HANDSHAKE_MS },
  );
  const silent: Deno.QuicConn[] = [];
  try {
    for (let i = 0; i < 2; i++) {
      silent.push(
        await Deno.connectQuic({
          hostname: "127.0.0.1",
          port: t.server.port,
          serverName: "localhost",
          alpnProtocols: ["h3"],
          caCerts: [t.server.certificate().certPem],
        }),
      );
    }
    // Both places are taken by connections that send nothing at all; once
    // the deadline passes they are closed and a real client gets in.
    let closed = 0;
    for (const conn of silent) conn.closed.then(() => closed++, () => closed++);
    await waitFor(() => closed === 2, 3000, "silent QUIC connections closed");
    const client = await t.connect();
    assert.equal((await client.request("ping")).error, 0);
  } finally {
    for (const conn of silent) {
      try {
        conn.close();
      } catch { /* closed */ }
    }
    await t.close();
  }
});

Deno.test("quic: a handshake that stalls after its first packet holds up no other connection", async () => {
  const t = await startTestServer({}, { handshakeTimeoutMs: 2000 });
  // A real client's first datagram (its Initial with the ClientHello),
  // caught on a socket that never answers...
  const trap = Deno.listenDatagram({
    hostname: "127.0.0.1",
    port: 0,
    transport: "udp",
  });
  const attacker = Deno.listenDatagram({
    hostname: "127.0.0.1",
    port: 0,
    transport: "udp",
  });
  const caught = Promise.resolve(Deno.connectQuic({
    hostname: "127.0.0.1",
    port: (trap.addr as Deno.NetAddr).port,
    serverName: "localhost",
    alpnProtocols: ["h3"],
    caCerts: [t.server.certificate().certPem],
    maxIdleTimeout: 1000,
  })).catch(() => {});
  try {
    const [initial] = await trap.receive();
    // ...replayed to the server by an attacker that never answers either.
    await attacker.send(initial, {
      transport: "udp",
      hostname: "127.0.0.1",
      port: t.server.port,
    });
    await new Promise((resolve) => setTimeout(resolve, 200));
    const answered = await Promise.race([
      t.connect().then(async (c) => (await c.request("ping")).error === 0),
      new Promise<string>((r) =>
        setTimeout(() => r("no session in 1.5 s"), 1500)
      ),
    ]);
    assert.equal(answered, true);
  } finally {
    trap.close();
    attacker.close();
    await caught;
    await t.close();
  }
});

// --- Server processes -----------------------------------------------------

/** A server process, optionally under a lower open-file limit. */
async function serverProcess(
  env: Record<string, string>,
  nofile?: number,
): Promise<{
  child: Deno.ChildProcess;
  port: number;
  dataDir: string;
  certPem: string;
  certHash: string;
  exited: () => boolean;
  output: () => string;
  stop(): Promise<void>;
}> {
  const dataDir = await Deno.makeTempDir({ prefix: "amtp-hygiene-" });
  const deno = [Deno.execPath(), "run", ...taskArgs("start")];
  const command = nofile
    ? ["prlimit", `--nofile=${nofile}:${nofile}`, ...deno]
    : deno;
  const child = new Deno.Command(command[0], {
    args: command.slice(1),
    cwd: dataDir,
    env: cleanEnv({
      AMTP_HOST: "127.0.0.1",
      AMTP_PORT: "0",
      AMTP_DATA: dataDir,
      ...env,
    }),
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let out = "";
  let exited = false;
  const status = child.status.then(() => exited = true);
  const collect = async (stream: ReadableStream<Uint8Array>) => {
    const decoder = new TextDecoder();
    for await (const chunk of stream) {
      out += decoder.decode(chunk, { stream: true });
    }
  };
  const reading = Promise.all([collect(child.stdout), collect(child.stderr)]);
  await waitFor(() => /sha256: [0-9a-f]+/.test(out) || exited, 30_000, "start");
  const port = Number(out.match(/listening on [^ ]+:(\d+)/)?.[1]);
  assert.ok(port, `server did not start:\n${out}`);
  return {
    child,
    port,
    dataDir,
    certPem: await Deno.readTextFile(`${dataDir}/tls/cert.pem`),
    certHash: out.match(/sha256: ([0-9a-f]+)/)![1],
    exited: () => exited,
    output: () => out,
    async stop() {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await status;
      await reading;
      await Deno.remove(dataDir, { recursive: true });
    },
  };
}

/** Resident memory of a process (`ps`: reading /proc needs --allow-all). */
function rssBytes(pid: number): number {
  const out = new Deno.Command("ps", {
    args: ["-o", "rss=", "-p", String(pid)],
    stdout: "piped",
  }).outputSync();
  return Number(new TextDecoder().decode(out.stdout).trim()) * 1024;
}

Deno.test("descriptors: more connections than the open-file limit do not end the server", async () => {
  const server = await serverProcess(
    {
      AMTP_MAX_SESSIONS_PER_IP: "100000",
      AMTP_FD_RESERVE: "32",
      AMTP_HANDSHAKE_TIMEOUT: "2",
    },
    256,
  );
  const attackers: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 400; i++) {
      try {
        attackers.push(
          await Deno.connect({ hostname: "127.0.0.1", port: server.port }),
        );
      } catch {
        break; // Refused: nobody listens any more.
      }
    }
    // Give the server time to accept (and refuse) them all.
    await new Promise((resolve) => setTimeout(resolve, 1500));
    assert.ok(!server.exited(), `server exited:\n${server.output()}`);
    for (const conn of attackers.splice(0)) conn.close();
    // Once the attackers are gone, real clients are served on both ports.
    const url = `127.0.0.1:${server.port}/amtp`;
    let ws: AmtpClient | undefined;
    await waitFor(
      async () => {
        try {
          ws = await AmtpClient.connect({
            url: `wss://${url}`,
            caCerts: [server.certPem],
            keepAliveMs: 0,
          });
          return true;
        } catch {
          return false;
        }
      },
      10_000,
      "a WebSocket session after the attack",
    );
    assert.equal((await ws!.request("ping")).error, 0);
    const wt = await AmtpClient.connect({
      url: `https://${url}`,
      certHash: server.certHash,
      keepAliveMs: 0,
    });
    assert.equal((await wt.request("ping")).error, 0);
    ws!.close();
    wt.close();
    assert.ok(!server.exited());
    assert.match(server.output(), /reason="descriptor limit"/);
  } finally {
    for (const conn of attackers) conn.close();
    await server.stop();
  }
});

Deno.test("backpressure: a client that pipelines 3,000 requests for 500 KiB and reads nothing stays bounded", async () => {
  const server = await serverProcess({
    AMTP_RATE_LIMIT: "1000000",
    AMTP_LOG_LEVEL: "warn",
  });
  let attacker: Deno.TlsConn | undefined;
  try {
    const client = await AmtpClient.connect({
      url: `https://127.0.0.1:${server.port}/amtp`,
      certHash: server.certHash,
      keepAliveMs: 0,
    });
    const admin = await adminCaller(client, server.dataDir);
    await admin("admin_add_domain", { domain: "example.org" });
    const key = await userMaker(admin)("big@example.org");
    const token = await login(client, "user", "big@example.org", key);
    const sent = await client.call<{ id: string }>("send", {
      module: "messages",
      user_token: token,
      to: ["big@example.org"],
      subject: "large",
      body: "x".repeat(500 * 1024),
    });
    client.close();
    const before = rssBytes(server.child.pid);

    const raw = await rawWebSocket(server.port, server.certPem);
    attacker = raw.conn;
    const requests = [];
    for (let i = 0; i < 3000; i++) {
      requests.push(clientFrame(
        0x2,
        encodeDocument({
          command: "get",
          module: "messages",
          user_token: token,
          id: sent.id,
          requestID: i,
        }),
      ));
    }
    // Written in the background: the server may stop reading first.
    const writing = (async () => {
      for (const frame of requests) await write(raw.conn, frame);
    })().catch(() => {});
    let peak = before;
    for (let i = 0; i < 40; i++) {
      await new Promise((resolve) => setTimeout(resolve, 250));
      peak = Math.max(peak, rssBytes(server.child.pid));
    }
    const grown = (peak - before) / 1024 / 1024;
    assert.ok(grown < 300, `server RSS grew by ${grown.toFixed(0)} MB`);
    assert.ok(!server.exited());
    raw.conn.close();
    await writing;
  } finally {
    try {
      attacker?.close();
    } catch { /* closed */ }
    await server.stop();
  }
});
