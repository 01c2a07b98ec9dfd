import assert from "node:assert/strict";
import {
  BULK_ABOVE,
  type ByteStream,
  WebSocketConnection,
} from "./websocket.ts";

Deno.test("websocket: a command's answer waits behind at most the transfer chunk being written, not the chunks queued after it", async () => {
  // A byte stream whose first write is held until the test opens it; the
  // writes are recorded as what they carry.
  const written: string[] = [];
  let open!: () => void;
  const opened = new Promise<void>((resolve) => open = resolve);
  let first = true;
  const stream: ByteStream = {
    read: () => new Promise(() => {}),
    write: async (bytes) => {
      if (first) {
        first = false;
        await opened;
      }
      // Frame headers are written apart from a large payload: skip them.
      if (bytes.byteLength >= BULK_ABOVE) written.push(`chunk ${bytes[0]}`);
      else if (bytes.byteLength > 16) written.push("answer");
    },
    close: () => {},
    closed: new Promise(() => {}),
  };
  const conn = new WebSocketConnection(stream, {
    ip: "127.0.0.1",
    maxFrame: 1 << 20,
  });
  const chunk = (n: number) => new Uint8Array(BULK_ABOVE + 1024).fill(n);
  const all = [conn.send(chunk(1))];
  await new Promise((resolve) => setTimeout(resolve, 0));
  // While chunk 1 is being written: two more chunks, then a command's answer.
  all.push(conn.send(chunk(2)), conn.send(chunk(3)));
  all.push(conn.send(new Uint8Array(40).fill(9)));
  open();
  await Promise.all(all);
  assert.deepEqual(written, ["chunk 1", "answer", "chunk 2", "chunk 3"]);
  conn.close();
});
