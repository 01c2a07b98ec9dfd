/**
 * The transfer lane: a second WebTransport stream of a session carries large
 * transfers beside the command stream. Requests on it are answered on it,
 * with the session's logins; pushes and command answers stay on the command
 * stream; the client library sends transfers there and falls back to the one
 * connection over WebSocket.
 */

import assert from "node:assert/strict";
import {
  openWebSocket,
  openWebTransport,
  WEBSOCKET_SEND_BUFFER,
} from "../client/transport.ts";
import { createHash } from "node:crypto";
import {
  decodeDocument,
  type Document,
  encodeDocument,
} from "../core/wire/mod.ts";
import { mailWorld } from "../testing/mail.ts";
import { sha256Hex } from "../shared/pem.ts";

const CHUNK = 256 * 1024;

Deno.test("transfer lane: answers on the second stream, pushes on the first, the client library's transfers", async () => {
  const world = await mailWorld();
  try {
    const a = await world.session("a@example.org");
    const b = await world.session("b@example.org");
    // A 1 MiB attachment, sent to a.
    const file = crypto.getRandomValues(new Uint8Array(65536));
    const data = new Uint8Array(4 * CHUNK);
    for (let at = 0; at < data.byteLength; at += file.byteLength) {
      data.set(file, at);
      data[at] = at / file.byteLength;
    }
    const started = await b.call<{ upload_id: string }>("attachment_upload", {
      name: "f.bin",
      size: data.byteLength,
      sha256: await sha256Hex(data),
    });
    for (let index = 0; index * CHUNK < data.byteLength; index++) {
      // Uploads go on the lane too (the client library's transferRequest).
      const r = await b.client.transferRequest("attachment_upload_chunk", {
        module: "messages",
        user_token: b.token,
        upload_id: started.upload_id,
        index,
        data: data.subarray(index * CHUNK, (index + 1) * CHUNK),
      });
      assert.equal(r.error, 0, r.message);
    }
    const { attachment_id } = await b.call<{ attachment_id: string }>(
      "attachment_upload_finish",
      { upload_id: started.upload_id },
    );
    await b.call("send", {
      to: ["a@example.org"],
      subject: "file",
      body: "x",
      attachments: [attachment_id],
    });
    const listed = await a.call<{ messages: { id: string }[] }>("list", {
      folder: "inbox",
    });
    const id = listed.messages[0].id;

    // Raw: a session of two streams, a's token used on both.
    const url = `https://127.0.0.1:${world.t.server.port}/amtp`;
    const commands = await openWebTransport({
      url,
      certHash: world.t.server.certSha256(),
    });
    const lane = await commands.lane!();
    const reader = (t: typeof commands) => {
      const frames = t.frames()[Symbol.asyncIterator]();
      return async () => {
        const next = await frames.next();
        assert.ok(!next.done, "the stream ended");
        return decodeDocument(next.value) as Document;
      };
    };
    const onCommands = reader(commands);
    const onLane = reader(lane);
    const get = (index: number, requestID: number) =>
      encodeDocument({
        command: "attachment_get",
        requestID,
        module: "messages",
        user_token: a.token,
        id,
        attachment_id,
        index,
      });
    // Four chunks asked on the lane, a ping on the commands: each answered
    // where it was asked.
    for (let i = 0; i < 4; i++) await lane.send(get(i, 100 + i));
    await commands.send(
      encodeDocument({
        command: "quota",
        requestID: 1,
        module: "messages",
        user_token: a.token,
      }),
    );
    const quota = await onCommands();
    assert.equal(quota.requestID, 1);
    assert.equal(quota.error, 0, String(quota.message));
    const got = new Uint8Array(data.byteLength);
    for (let i = 0; i < 4; i++) {
      const answer = await onLane();
      assert.equal(answer.error, 0, String(answer.message));
      const index = (answer.data as { index: number }).index;
      assert.equal(answer.requestID, 100 + index);
      got.set((answer.data as { data: Uint8Array }).data, index * CHUNK);
    }
    assert.deepEqual(got, data);
    // A push for a (this session is bound to a by the token) comes on the
    // command stream; the lane's next frame is its own answer.
    await b.call("send", { to: ["a@example.org"], subject: "ping", body: "y" });
    let push: Document;
    do push = await onCommands(); while (push.event !== "message_new");
    assert.equal((push.data as { subject: string }).subject, "ping");
    await lane.send(encodeDocument({ command: "ping", requestID: 7 }));
    const pong = await onLane();
    assert.equal(pong.requestID, 7);
    assert.equal(pong.event, undefined);
    commands.close();

    // The client library: transfers on the lane beside commands (WebTransport),
    // on the one connection over WebSocket; both byte for byte.
    for (const transport of ["webtransport", "websocket"] as const) {
      const client = await world.t.connect({ transport });
      const parts = await Promise.all(
        [0, 1, 2, 3].map((index) =>
          client.transferRequest("attachment_get", {
            module: "messages",
            user_token: a.token,
            id,
            attachment_id,
            index,
          })
        ),
      );
      const whole = new Uint8Array(data.byteLength);
      for (const p of parts) {
        assert.equal(p.error, 0, p.message);
        const d = p.data as { index: number; data: Uint8Array };
        whole.set(d.data, d.index * CHUNK);
      }
      assert.deepEqual(whole, data, transport);
      assert.equal((await client.request("ping")).error, 0);
      client.close();
    }
  } finally {
    await world.t.close();
  }
});

Deno.test("websocket client: sends wait while the socket holds more than its send buffer (an upload does not queue megabytes ahead of commands)", async () => {
  // A WebSocket peer on loopback that answers the upgrade, then reads
  // nothing until told.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let startReading!: () => void;
  const reading = new Promise<void>((resolve) => startReading = resolve);
  let received = 0;
  const peer = (async () => {
    const conn = await listener.accept();
    const buffer = new Uint8Array(64 * 1024);
    let head = "";
    while (!head.includes("\r\n\r\n")) {
      const n = await conn.read(buffer);
      if (n === null) return;
      head += new TextDecoder().decode(buffer.subarray(0, n));
    }
    const key = /sec-websocket-key: *(\S+)/i.exec(head)![1];
    const accept = createHash("sha1")
      .update(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
    await conn.write(
      new TextEncoder().encode(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\n" +
          `connection: Upgrade\r\nsec-websocket-accept: ${accept}\r\n\r\n`,
      ),
    );
    await reading;
    // Every chunk, framed (a masked frame's header is 14 bytes).
    while (received < 128 * (CHUNK + 14)) {
      const n = await conn.read(buffer).catch(() => null);
      if (n === null) break;
      received += n;
    }
    conn.close();
  })();
  const { port } = listener.addr as Deno.NetAddr;
  const transport = await openWebSocket({ url: `ws://127.0.0.1:${port}/amtp` });
  // 32 MiB of chunks sent one after the other, each send awaited (as an
  // upload does): far more than the kernel's socket buffers hold.
  const chunks = 128;
  let sent = 0;
  const sending = (async () => {
    for (let i = 0; i < chunks; i++) {
      await transport.send(new Uint8Array(CHUNK));
      sent++;
    }
  })();
  // Wait until the sends stop moving: the peer reads nothing.
  let last = -1;
  while (sent !== last) {
    last = sent;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  assert.ok(
    sent < chunks,
    `all ${chunks} sends resolved while the peer read nothing`,
  );
  assert.ok(WEBSOCKET_SEND_BUFFER < chunks * CHUNK);
  startReading();
  await sending;
  assert.equal(sent, chunks);
  await peer;
  assert.equal(received, chunks * (CHUNK + 14));
  transport.close();
  listener.close();
});
