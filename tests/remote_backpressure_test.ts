/**
 * `module-run` over a link that stops reading: what its module process
 * writes is held back (its output is not read while the link has not taken
 * enough), so nothing piles up in memory; when the link reads again, every
 * frame arrives, in order. The far end of the link is this test, speaking
 * the login of PROTOCOL.md section 12.9 over a Unix socket, since a real
 * server always reads its links: a slow or stuck one is what is tested here.
 * Also the bounded queue alone, over a real Unix socket.
 */

import assert from "node:assert/strict";
import {
  decodeDocument,
  encodeDocument,
  FrameDecoder,
} from "../core/wire/mod.ts";
import { writeKeyPair } from "../shared/login/keyfile.ts";
import { waitFor } from "../testing/helpers.ts";
import { startRemoteModule } from "../testing/remote_module.ts";
import { LOGIN_REQUEST, LOGIN_VERIFY } from "../workers/remote/protocol.ts";
import { MAX_QUEUED } from "../workers/remote/run.ts";
import { SendQueue } from "../workers/remote/send_queue.ts";

const FLOOD = new URL("./fixtures/remote/module/flood/1.0.0", import.meta.url)
  .pathname;
/** What the flood fixture writes: 128 frames of a little over 512 KiB. */
const FLOOD_FRAMES = 128;
const FLOOD_FRAME_BYTES = 512 * 1024;

/** A connected pair of Unix sockets (server side accepted). */
async function socketPair(
  path: string,
): Promise<{ near: Deno.Conn; far: Deno.Conn; close: () => void }> {
  const listener = Deno.listen({ transport: "unix", path });
  const [near, far] = await Promise.all([
    Deno.connect({ transport: "unix", path }),
    listener.accept(),
  ]);
  listener.close();
  return {
    near,
    far,
    close() {
      for (const conn of [near, far]) {
        try {
          conn.close();
        } catch {
          // Closed already.
        }
      }
    },
  };
}

/** Frames read from a connection, on demand. */
function frameReader(conn: Deno.Conn): () => Promise<Uint8Array> {
  const reader = conn.readable.getReader();
  const decoder = new FrameDecoder(32 * 1024 * 1024);
  const ready: Uint8Array[] = [];
  return async () => {
    while (ready.length === 0) {
      const { value, done } = await reader.read();
      if (done) throw new Error("the connection closed");
      ready.push(...decoder.pushOrThrow(value));
    }
    return ready.shift()!;
  };
}

Deno.test("module-run: a link that stops reading holds the module process back; nothing piles up, and nothing is lost when it reads again", async () => {
  const dir = await Deno.makeTempDir({ prefix: "amtp-backpressure-" });
  const path = `${dir}/link.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  const { keyFile } = await writeKeyPair(`${dir}/key`);
  const p = startRemoteModule(FLOOD, ["--socket", path, "--key", keyFile]);
  let conn: Deno.Conn | undefined;
  try {
    conn = await Promise.race([
      listener.accept(),
      p.exited.then((code) => {
        throw new Error(`module-run ended (${code}): ${p.output()}`);
      }),
    ]);
    const next = frameReader(conn);
    const answer = (request: Record<string, unknown>, data: unknown) =>
      conn!.write(encodeDocument({
        command: request.command,
        requestID: request.requestID,
        error: 0,
        data,
      }));
    // The login, as the server answers it (this end checks nothing).
    const ask = decodeDocument(await next());
    assert.equal(ask.command, LOGIN_REQUEST);
    await answer(ask, {
      algorithm: "Ed25519",
      key_id: ask.key_id,
      nonce: crypto.getRandomValues(new Uint8Array(32)),
      expires_in: 10,
    });
    const proof = decodeDocument(await next());
    assert.equal(proof.command, LOGIN_VERIFY);
    await answer(proof, {
      module: "flood",
      version: "1.0.0",
      commands: [],
      events: [],
      services: [],
      timeout_ms: 1000,
    });
    // Now this end reads nothing. The module writes until it is held back:
    // its progress stops (no new line for 3 s), short of the end.
    const progress = () =>
      [...p.output().matchAll(/flooded (\d+)/g)].map((m) => Number(m[1]))
        .at(-1) ?? 0;
    let seen = -1;
    let since = Date.now();
    await waitFor(
      () => {
        if (/flood done/.test(p.output())) return true;
        const now = progress();
        if (now !== seen) {
          seen = now;
          since = Date.now();
        }
        return Date.now() - since > 3000;
      },
      60_000,
      "the flood to stop or end",
    );
    const held = progress();
    // (ps, as `deno task test` may run commands but not read /proc)
    const ps = await new Deno.Command("ps", {
      args: ["-o", "rss=", "-p", String(p.child.pid)],
      stdout: "piped",
    }).output();
    const rss = Number(new TextDecoder().decode(ps.stdout).trim());
    console.log(
      `module wrote ${held} of ${FLOOD_FRAMES} frames while the link was stuck; module-run RSS ${
        Math.round(rss / 1024)
      } MiB`,
    );
    assert.ok(!/flood done/.test(p.output()), p.output());
    // Queued in module-run (the bound plus one frame), the socket's and the
    // pipe's buffers, and the frames counted in eights: far under the 64 MiB.
    const bound = MAX_QUEUED + 4 * 1024 * 1024;
    assert.ok(
      held * FLOOD_FRAME_BYTES <= bound + 8 * FLOOD_FRAME_BYTES,
      `${held} frames written`,
    );
    // Reading again: every frame comes, in order.
    for (let n = 0; n < FLOOD_FRAMES; n++) {
      const doc = decodeDocument(await next());
      assert.equal(doc.n, n);
      assert.equal((doc.pad as string).length, FLOOD_FRAME_BYTES);
    }
    await waitFor(() => /flood done/.test(p.output()), 20_000, "flood done");
  } finally {
    conn?.close();
    listener.close();
    await p.kill();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SendQueue: over a socket whose far end does not read, the producer is told to wait once the bound is passed; all frames arrive in order when it reads", async () => {
  const dir = await Deno.makeTempDir({ prefix: "amtp-sendqueue-" });
  const pair = await socketPair(`${dir}/q.sock`);
  const writer = pair.near.writable.getWriter();
  const maxBytes = 256 * 1024;
  const frameBytes = 64 * 1024;
  const frames = 200;
  const queue = new SendQueue((frame) => writer.write(frame), { maxBytes });
  let pushed = 0;
  let most = 0;
  let waiting = false;
  const producing = (async () => {
    for (let n = 0; n < frames; n++) {
      const frame = new Uint8Array(frameBytes).fill(n % 251);
      new DataView(frame.buffer).setInt32(0, frameBytes, true);
      new DataView(frame.buffer).setInt32(4, n, true);
      frame[frameBytes - 1] = 0;
      const wait = queue.push(frame);
      pushed++;
      most = Math.max(most, queue.queued);
      if (wait) {
        waiting = true;
        await wait;
        waiting = false;
      }
    }
  })();
  try {
    // Nothing is read: the producer ends up waiting, well short of the end.
    await waitFor(() => waiting, 10_000, "the producer to wait");
    const first = pushed;
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(waiting);
    assert.ok(pushed < frames, `${pushed} pushed`);
    assert.ok(pushed <= first + 8, `${first} then ${pushed}`);
    assert.ok(most <= maxBytes + frameBytes, `${most} bytes queued`);
    // Reading: all frames, in order; the queue never held more.
    const next = frameReader(pair.far);
    for (let n = 0; n < frames; n++) {
      const frame = await next();
      assert.equal(
        new DataView(frame.buffer, frame.byteOffset).getInt32(4, true),
        n,
      );
    }
    await producing;
    assert.ok(most <= maxBytes + frameBytes, `${most} bytes queued`);
    assert.equal(queue.queued, 0);
  } finally {
    pair.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("SendQueue: a failed write is reported once, wakes the waiting producer, and later frames are dropped", async () => {
  const errors: unknown[] = [];
  let calls = 0;
  const queue = new SendQueue(() => {
    calls++;
    return Promise.reject(new Error("link gone"));
  }, { maxBytes: 10, onError: (error) => errors.push(error) });
  const wait = queue.push(new Uint8Array(20));
  assert.ok(wait);
  await wait;
  assert.equal(errors.length, 1);
  assert.equal(queue.push(new Uint8Array(5)), undefined);
  assert.equal(calls, 1);
  assert.equal(queue.queued, 0);
});
