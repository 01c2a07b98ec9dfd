import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { KvStorage } from "../../../workers/sdk/storage.ts";
import type { ModuleContext } from "../../../workers/sdk/mod.ts";
import { Attachments, CHUNK_SIZE } from "./attachments.ts";
import {
  addMessage,
  Mailbox,
  type MessageRecord,
  releaseCopies,
} from "./mailbox.ts";
import { sweep } from "./sweep.ts";
import { blobPut, receivedBlob } from "./transfer.ts";

const DAY = 24 * 3600 * 1000;

async function withStorage(
  fn: (storage: KvStorage) => Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "amtp-sweep-" });
  const kv = await Deno.openKv(`${dir}/m.kv`);
  try {
    await fn(new KvStorage(kv, "messages", 1e12));
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
}

/** Keys under a prefix. */
async function keys(storage: KvStorage, prefix: (string | number)[]) {
  return (await storage.list(prefix, { limit: 1000 })).items.length;
}

const hex = (data: Uint8Array) =>
  createHash("sha256").update(data).digest("hex");

/** An upload of `data` by `owner`, finished or not. */
async function upload(
  storage: KvStorage,
  owner: string,
  data: Uint8Array,
  finish: boolean,
) {
  const files = new Attachments(storage, owner);
  const started = await files.start({
    name: "f.bin",
    type: "application/octet-stream",
    size: data.byteLength,
    sha256: hex(data),
  });
  const chunks = finish ? Math.ceil(data.byteLength / CHUNK_SIZE) : 1;
  for (let i = 0; i < chunks; i++) {
    await files.chunk(
      started.id,
      i,
      data.slice(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE),
    );
  }
  return { started, meta: finish ? await files.finish(started.id) : null };
}

function record(
  id: string,
  owner: string,
  attachment: { id: string; size: number; sha256: string; blob?: string },
): MessageRecord {
  return {
    id,
    message_id: id,
    global_id: `${id}@x.test`,
    owner,
    folder: "inbox",
    from: "a@x.test",
    to: [owner],
    cc: [],
    bcc: [],
    subject: id,
    format: "text",
    encrypted: false,
    attachments: [{ ...attachment, name: "f.bin", type: "" }],
    in_reply_to: null,
    thread: `${id}@x.test`,
    seen: false,
    flagged: false,
    date: new Date(),
    size: 300 + attachment.size,
    preview: "",
  };
}

const data = (size: number, seed: number) =>
  new Uint8Array(size).map((_, i) => (i * 31 + seed) & 0xff);

Deno.test("sweep: an abandoned upload goes with its chunks after the expiry, not before", async () => {
  await withStorage(async (storage) => {
    const now = Date.now();
    const { started } = await upload(
      storage,
      "a@x.test",
      data(2 * CHUNK_SIZE, 1),
      false,
    );
    assert.deepEqual(
      await sweep(storage, { now: now + DAY - 1000, expiryMs: DAY }),
      { uploads: 0, transfers: 0, blobs: 0 },
    );
    assert.equal(await keys(storage, ["blob", started.blob]), 1);
    const swept = await sweep(storage, {
      now: now + DAY + 1000,
      expiryMs: DAY,
    });
    assert.equal(swept.uploads, 1);
    assert.equal(await keys(storage, ["upload"]), 0);
    assert.equal(await keys(storage, ["blob", started.blob]), 0);
  });
});

Deno.test("sweep: a finished upload never attached goes; one a message holds stays until the message is deleted", async () => {
  await withStorage(async (storage) => {
    const now = Date.now();
    const lonely = await upload(
      storage,
      "a@x.test",
      data(CHUNK_SIZE + 5, 2),
      true,
    );
    const sent = await upload(
      storage,
      "a@x.test",
      data(CHUNK_SIZE + 7, 3),
      true,
    );
    // Sent: attached (own() marks it used) to a message in b's mailbox.
    const meta = await new Attachments(storage, "a@x.test").own(sent.meta!.id);
    await addMessage(storage, {
      id: "m1",
      body: "x",
      fresh: false,
      copies: [{ record: record("m1", "b@x.test", meta), quota: 1e12 }],
    });
    const later = now + DAY + 1000;
    const swept = await sweep(storage, { now: later, expiryMs: DAY });
    assert.deepEqual(swept, { uploads: 2, transfers: 0, blobs: 1 });
    assert.equal(await storage.get(["blob_meta", lonely.meta!.id]), null);
    assert.equal(await keys(storage, ["blob", lonely.meta!.id]), 0);
    assert.ok(await storage.get(["blob_meta", meta.id]));
    assert.equal(await keys(storage, ["blob", meta.id]), 2);
    // The message deleted: its attachment goes at the next sweep.
    const { removed } = await new Mailbox(storage, "b@x.test").update(["m1"], {
      remove: true,
    });
    await releaseCopies(storage, removed);
    assert.equal(
      (await sweep(storage, { now: later, expiryMs: DAY })).blobs,
      1,
    );
    assert.equal(await storage.get(["blob_meta", meta.id]), null);
    assert.equal(await keys(storage, ["blob", meta.id]), 0);
  });
});

Deno.test("sweep: blobs from another server — an unfinished transfer, and a finished one whose message never came — go after the expiry", async () => {
  await withStorage(async (storage) => {
    const ctx = {
      storage,
      accounts: {
        resolve: (addresses: string[]) =>
          Promise.resolve(addresses.map((address) => ({
            input: address,
            address,
            kind: "local",
            mailboxes: [{ address, quota: 0 }],
            remote: [],
          }))),
      },
    } as unknown as ModuleContext;
    const put = (bytes: Uint8Array, offset: number, size: number) =>
      blobPut(
        {
          kind: "blob_put",
          from: "s@origin.test",
          to: ["b@x.test"],
          id: hex(bytes),
          payload: {
            size,
            offset,
            data: bytes.slice(offset, Math.min(size, offset + CHUNK_SIZE)),
          },
          peer_domain: "origin.test",
        },
        ctx,
        1e12,
      );
    const now = Date.now();
    const partial = data(2 * CHUNK_SIZE, 4);
    await put(partial, 0, partial.byteLength);
    const whole = data(CHUNK_SIZE + 9, 5);
    await put(whole, 0, whole.byteLength);
    await put(whole, CHUNK_SIZE, whole.byteLength);
    const received = await receivedBlob(storage, hex(whole));
    assert.ok(received);
    assert.equal(
      (await sweep(storage, { now, expiryMs: DAY })).transfers,
      0,
    );
    const swept = await sweep(storage, {
      now: now + DAY + 1000,
      expiryMs: DAY,
    });
    assert.deepEqual(swept, { uploads: 0, transfers: 1, blobs: 1 });
    assert.equal(await keys(storage, ["blob_in"]), 0);
    assert.equal(await receivedBlob(storage, hex(whole)), null);
    assert.equal(await keys(storage, ["blob"]), 0);
    assert.equal(await keys(storage, ["blob_meta"]), 0);
  });
});

Deno.test("sweep: records from before expiry times existed are dated at the first sweep, not removed", async () => {
  await withStorage(async (storage) => {
    const { started } = await upload(storage, "a@x.test", data(10, 6), false);
    const entry = await storage.get<Record<string, unknown>>([
      "upload",
      "a@x.test",
      started.id,
    ]);
    const { at: _, ...old } = entry!.value;
    await storage.set(entry!.key, old);
    const far = Date.now() + 100 * DAY;
    assert.equal(
      (await sweep(storage, { now: far, expiryMs: DAY })).uploads,
      0,
    );
    assert.equal(
      (await sweep(storage, { now: far + DAY - 1, expiryMs: DAY })).uploads,
      0,
    );
    assert.equal(
      (await sweep(storage, { now: far + DAY + 1, expiryMs: DAY })).uploads,
      1,
    );
  });
});
