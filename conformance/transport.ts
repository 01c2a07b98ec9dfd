/**
 * Requirements of sections 1 (transport) and 2 (framing).
 *
 * @module
 */

import { Binary, BSON, type Int32 } from "bson";
import { expect, expectEqual, Skip, type Suite } from "./harness.ts";
import {
  httpRequest,
  openRawWebSocket,
  openRawWebTransport,
  openTls,
} from "./raw.ts";
import type { World } from "./world.ts";

const ping = (requestID: number) =>
  new Uint8Array(BSON.serialize({ command: "ping", requestID }));

/** Read whole frames from a raw WebTransport stream (decoded, types kept). */
async function collect(
  frames: AsyncIterable<Uint8Array>,
  count: number,
  ms = 5000,
): Promise<{ docs: Record<string, unknown>[]; ended: boolean }> {
  const docs: Record<string, unknown>[] = [];
  const iterator = frames[Symbol.asyncIterator]();
  const until = Date.now() + ms;
  while (docs.length < count) {
    const left = until - Date.now();
    if (left <= 0) return { docs, ended: false };
    const next = await Promise.race([
      iterator.next(),
      new Promise<"timeout">((r) => setTimeout(() => r("timeout"), left)),
    ]);
    if (next === "timeout") return { docs, ended: false };
    if (next.done) return { docs, ended: true };
    docs.push(BSON.deserialize(next.value, { promoteValues: false }));
  }
  return { docs, ended: false };
}

/** Whether the stream ends (the server closed the session) within `ms`. */
async function endsWithin(
  frames: AsyncIterable<Uint8Array>,
  ms: number,
): Promise<boolean> {
  const iterator = frames[Symbol.asyncIterator]();
  const until = Date.now() + ms;
  while (Date.now() < until) {
    const next = await Promise.race([
      iterator.next().catch(() => ({ done: true, value: undefined })),
      new Promise<"timeout">((r) =>
        setTimeout(() => r("timeout"), until - Date.now())
      ),
    ]);
    if (next === "timeout") return false;
    if (next.done) return true;
  }
  return false;
}

const num = (value: unknown) =>
  typeof value === "number" ? value : (value as Int32 | undefined)?.value;

/** Sections 1 and 2. */
export async function transportChecks(suite: Suite, world: World) {
  const target = world.options.target;
  const maxFrame = (world.info.limits as { max_frame: number }).max_frame;

  await suite.check(
    "1",
    "MUST",
    "a session over WebTransport carries requests and responses on one bidirectional stream",
    async () => {
      const client = await world.connect("webtransport");
      const info = await client.call<{ protocol_version: number }>("info");
      expectEqual(info.protocol_version, 1, "protocol_version");
      client.close();
    },
  );
  await suite.check(
    "1",
    "MUST",
    "a session over WebSocket carries one frame per binary message",
    async () => {
      const ws = await openRawWebSocket(target);
      ws.send({ command: "ping", requestID: 1 });
      const doc = await ws.nextDocument();
      expect(doc, "no answer");
      expectEqual(num(doc.error), 0, "error");
      ws.close();
    },
  );
  await suite.check(
    "1",
    "MUST",
    "a WebSocket text message is refused with error 1 and the session closed",
    async () => {
      const ws = await openRawWebSocket(target);
      ws.frame(1, new TextEncoder().encode('{"command":"ping"}'));
      const doc = await ws.nextDocument();
      expect(doc, "no answer before the close");
      expectEqual(num(doc.error), 1, "error");
      expect(await ws.nextDocument(3000) === undefined, "session not closed");
      ws.close();
    },
  );
  await suite.check(
    "1",
    "MUST",
    "an unmasked WebSocket frame is refused with error 1 and the session closed",
    async () => {
      const ws = await openRawWebSocket(target);
      ws.frame(2, ping(1), { masked: false });
      const doc = await ws.nextDocument();
      expect(doc, "no answer before the close");
      expectEqual(num(doc.error), 1, "error");
      expect(await ws.nextDocument(3000) === undefined, "session not closed");
      ws.close();
    },
  );
  await suite.check(
    "1",
    "MUST",
    "a WebSocket message over max_frame is refused with error 2 from its header, before its payload",
    async () => {
      const ws = await openRawWebSocket(target);
      // The header announces one byte too many; no payload follows.
      ws.frame(2, new Uint8Array(0), { length: maxFrame + 1 });
      const doc = await ws.nextDocument();
      expect(doc, "no answer (was the payload awaited?)");
      expectEqual(num(doc.error), 2, "error");
      expect(doc.requestID === undefined, "requestID present");
      ws.close();
    },
  );
  await suite.check(
    "1",
    "MUST",
    "a WebSocket ping is answered with a pong carrying the same payload",
    async () => {
      const ws = await openRawWebSocket(target);
      const payload = new TextEncoder().encode("conformance");
      ws.frame(9, payload);
      let frame;
      do frame = await ws.next(); while (frame && frame.opcode !== 10);
      expect(frame, "no pong");
      expectEqual(
        new TextDecoder().decode(frame.payload),
        "conformance",
        "pong payload",
      );
      ws.close();
    },
  );
  await suite.check(
    "1",
    "MUST",
    "an upgrade request with another WebSocket version is not upgraded (426 or 400)",
    async () => {
      const { status } = await httpRequest(
        target,
        `GET /amtp HTTP/1.1\r\nHost: ${target.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 12\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
      );
      expect(status === 426 || status === 400, `status ${status}`);
    },
  );
  await suite.check(
    "1",
    "MUST",
    "any other HTTP request gets 404: GET /nope, and GET /amtp without an upgrade",
    async () => {
      for (const path of ["/nope", "/amtp"]) {
        const { status } = await httpRequest(
          target,
          `GET ${path} HTTP/1.1\r\nHost: ${target.host}\r\nConnection: close\r\n\r\n`,
        );
        expectEqual(status, 404, `GET ${path}`);
      }
    },
  );
  await suite.check(
    "1",
    "SHOULD",
    "GET / answers 200 with a short page",
    async () => {
      const { status } = await httpRequest(
        target,
        `GET / HTTP/1.1\r\nHost: ${target.host}\r\nConnection: close\r\n\r\n`,
      );
      expectEqual(status, 200, "GET /");
    },
  );
  await suite.check(
    "1",
    "MUST",
    "info.certificate_sha256 is the hash of the certificate served (the same on TCP and UDP)",
    async () => {
      const { socket, certHash } = await openTls(target);
      socket.destroy();
      expectEqual(
        world.info.certificate_sha256,
        certHash,
        "certificate_sha256",
      );
    },
  );
  await suite.check(
    "1",
    "MUST",
    "a session silent for idle_timeout is closed; one that pings more often is not",
    async () => {
      const idle = (world.info.limits as { idle_timeout: number }).idle_timeout;
      if (idle > 5) {
        throw new Skip(
          `idle_timeout is ${idle} s; the suite waits only for servers of 5 s or less`,
        );
      }
      const silent = await world.connect("websocket", { silent: true });
      const busy = await world.connect("webtransport");
      let closed = false;
      silent.closed.then(() => closed = true);
      const pinger = setInterval(
        () => busy.request("ping").catch(() => {}),
        idle * 1000 / 3,
      );
      await new Promise((r) => setTimeout(r, idle * 1000 + 2500));
      clearInterval(pinger);
      expect(closed, `a silent session still open after ${idle + 2.5} s`);
      expectEqual(
        (await busy.request("ping", {}, 3000)).error,
        0,
        "a pinging session",
      );
    },
  );

  // Section 2: framing, on the raw WebTransport stream.
  await suite.check(
    "2",
    "MUST",
    "frames split anywhere, or several in one write, are reassembled and each answered",
    async () => {
      const t = await openRawWebTransport(target);
      const bytes = new Uint8Array([...ping(1), ...ping(2), ...ping(3)]);
      for (let i = 0; i < bytes.length; i += 3) {
        await t.send(bytes.subarray(i, i + 3));
      }
      await t.send(new Uint8Array([...ping(4), ...ping(5)]));
      const { docs } = await collect(t.frames(), 5);
      expectEqual(docs.length, 5, "answers");
      expectEqual(
        docs.map((d) => num(d.requestID)).sort().join(","),
        "1,2,3,4,5",
        "requestIDs",
      );
      t.close();
    },
  );
  await suite.check(
    "2",
    "MUST",
    "a frame length below 5 is answered with error 1 without requestID, and the session closed",
    async () => {
      const t = await openRawWebTransport(target);
      await t.send(new Uint8Array([3, 0, 0, 0]));
      const frames = t.frames();
      const { docs } = await collect(frames, 1);
      expect(docs[0], "no answer");
      expectEqual(num(docs[0].error), 1, "error");
      expect(docs[0].requestID === undefined, "requestID present");
      expect(await endsWithin(frames, 3000), "session not closed");
      t.close();
    },
  );
  await suite.check(
    "2",
    "MUST",
    "a frame length above max_frame is refused with error 2 before its body, and the session closed",
    async () => {
      const t = await openRawWebTransport(target);
      const head = new Uint8Array(4);
      new DataView(head.buffer).setInt32(0, maxFrame + 1, true);
      await t.send(head);
      const frames = t.frames();
      const { docs } = await collect(frames, 1);
      expect(docs[0], "no answer (was the body awaited?)");
      expectEqual(num(docs[0].error), 2, "error");
      expect(docs[0].requestID === undefined, "requestID present");
      expect(await endsWithin(frames, 3000), "session not closed");
      t.close();
    },
  );
  await suite.check(
    "2",
    "MUST",
    "a valid length with content that is not BSON is error 1 without requestID, and the session goes on",
    async () => {
      const t = await openRawWebTransport(target);
      const garbage = new Uint8Array(16).fill(0xee);
      new DataView(garbage.buffer).setInt32(0, 16, true);
      await t.send(garbage);
      await t.send(ping(7));
      const { docs } = await collect(t.frames(), 2);
      expectEqual(docs.length, 2, "answers");
      expectEqual(num(docs[0].error), 1, "error of the garbage");
      expect(docs[0].requestID === undefined, "requestID present");
      expectEqual(num(docs[1].requestID), 7, "the ping after it");
      t.close();
    },
  );
  await suite.check(
    "2",
    "MUST",
    "a document whose length field differs from its WebSocket message is malformed (error 1)",
    async () => {
      const ws = await openRawWebSocket(target);
      const frame = ping(1);
      ws.frame(2, frame.subarray(0, frame.length - 1));
      const doc = await ws.nextDocument();
      expect(doc, "no answer");
      expectEqual(num(doc.error), 1, "error");
      ws.close();
    },
  );
  await suite.check(
    "2",
    "MUST",
    "a string that is not UTF-8 makes the document malformed (error 1)",
    async () => {
      const ws = await openRawWebSocket(target);
      const bad = new Uint8Array(BSON.serialize({ command: "ping", x: "aa" }));
      bad[bad.length - 3] = 0xff;
      ws.frame(2, bad);
      const doc = await ws.nextDocument();
      expect(doc, "no answer");
      expectEqual(num(doc.error), 1, "error");
      ws.close();
    },
  );
  await suite.check(
    "2",
    "MUST",
    "a binary value of another subtype than 0 makes the document malformed (error 1)",
    async () => {
      const ws = await openRawWebSocket(target);
      ws.send({
        command: "ping",
        requestID: 1,
        blob: new Binary(new Uint8Array(16), 4),
      });
      const doc = await ws.nextDocument();
      expect(doc, "no answer");
      expectEqual(num(doc.error), 1, "error");
      ws.close();
    },
  );
  await suite.check(
    "2",
    "SHOULD",
    "a malformed frame's message is in protocol terms, not a parser's internals",
    async () => {
      const ws = await openRawWebSocket(target);
      const frame = ping(1);
      ws.frame(2, frame.subarray(0, frame.length - 1));
      const doc = await ws.nextDocument();
      expect(doc, "no answer");
      const message = String(doc.message ?? "");
      expect(
        message.length > 0 &&
          !/===|bson size|buffer|undefined|Error:/i.test(message),
        `message ${JSON.stringify(message)}`,
      );
      ws.close();
    },
  );
}
