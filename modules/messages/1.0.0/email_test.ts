import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { simpleParser } from "mailparser";
import { KvStorage } from "../../../workers/sdk/storage.ts";
import type { ModuleContext } from "../../../workers/sdk/mod.ts";
import { readBlob, storeBlob } from "./attachments.ts";
import { composeOutbound, storeEmail } from "./email.ts";
import {
  addMessage,
  key,
  type MessageRecord,
  recordOf,
  type StoredRecord,
} from "./mailbox.ts";

/** The sender's Sent copy of `id`, naming one attachment. */
function sentCopy(
  id: string,
  attachment: { id: string; size: number; sha256: string },
): MessageRecord {
  return {
    id: `${id}-sent`,
    message_id: id,
    global_id: `${id}@example.test`,
    owner: "bob@example.test",
    folder: "sent",
    from: "bob@example.test",
    to: ["carol@other.test"],
    cc: [],
    bcc: [],
    subject: "report",
    format: "text",
    encrypted: false,
    attachments: [{
      ...attachment,
      name: "report.bin",
      type: "application/octet-stream",
    }],
    in_reply_to: null,
    thread: `${id}@example.test`,
    seen: true,
    flagged: false,
    date: new Date(),
    size: 500,
    preview: "",
  };
}

Deno.test("email: the queue composing before send stored the sender's copy still gets the attachments (it waits for the copy)", async () => {
  const dir = await Deno.makeTempDir();
  const kv = await Deno.openKv(`${dir}/kv`);
  try {
    const storage = new KvStorage(kv, "messages", 1e9);
    const ctx = {
      storage,
      accounts: { profile: () => Promise.resolve(null) },
    } as unknown as ModuleContext;
    const data = crypto.getRandomValues(new Uint8Array(5000));
    const blob = await storeBlob(storage, {
      id: "att1",
      owner: "bob@example.test",
      name: "report.bin",
      type: "application/octet-stream",
    }, data);
    const request = {
      from: "bob@example.test",
      to: ["carol@other.test"],
      id: "m1",
      payload: {
        to: ["carol@other.test"],
        cc: [],
        subject: "report",
        format: "text",
        encrypted: false,
        in_reply_to: null,
        thread: "m1@example.test",
        date: new Date(),
        body: "see attached",
      },
    };
    // `send` stores the copy a moment after it queued the message.
    const composing = composeOutbound(request, ctx);
    await new Promise((r) => setTimeout(r, 200));
    await addMessage(storage, {
      id: "m1",
      body: "see attached",
      fresh: true,
      copies: [{ record: sentCopy("m1", blob), quota: 1e9 }],
    });
    const parsed = await simpleParser(Buffer.from((await composing).raw));
    assert.deepStrictEqual(parsed.attachments.length, 1);
    assert.deepStrictEqual(new Uint8Array(parsed.attachments[0].content), data);
    // A young message whose copy never comes: tried again later, not sent
    // without what it should carry.
    await assert.rejects(
      () => composeOutbound({ ...request, id: "m2" }, ctx),
      /not stored yet/,
    );
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("email: a received email's source, copies and Message-ID index land in one commit; with more copies than one commit takes, its source is stored before them", async () => {
  const dir = await Deno.makeTempDir();
  const kv = await Deno.openKv(`${dir}/kv`);
  try {
    const storage = new KvStorage(kv, "messages", 1e9);
    const raw = (n: number) =>
      new TextEncoder().encode(
        `From: zoe@sender.test\r\nTo: bob@example.test\r\nMessage-ID: <m${n}@sender.test>\r\nSubject: hi\r\n\r\nbody ${n}\r\n`,
      );
    const placement = (owner: string) => ({
      owner,
      quota: 1e9,
      folder: "inbox",
      seen: false,
      flagged: false,
    });
    const env = { storage, hosted: () => Promise.resolve(new Set<string>()) };
    const stamp = async (key: Deno.KvKey) =>
      (await kv.get(["mod", "messages", "d", ...key])).versionstamp;
    await storeEmail(env, {
      raw: raw(1),
      placements: [placement("bob@example.test")],
      date: new Date(),
    });
    const [copy] = (await storage.list<StoredRecord>([
      "msg",
      "bob@example.test",
    ])).items.map(recordOf);
    const source = copy.email!.source;
    const commit = await stamp(["msg", "bob@example.test", copy.id]);
    assert.ok(commit);
    assert.equal(await stamp(["blob_meta", source.id]), commit);
    assert.equal(
      await stamp(key.emid("bob@example.test", "m1@sender.test")),
      commit,
    );
    // Ten copies take two commits: the source is there before either.
    const owners = Array.from({ length: 10 }, (_, i) => `u${i}@example.test`);
    await storeEmail(env, {
      raw: raw(2),
      placements: owners.map(placement),
      date: new Date(),
    });
    const copies = await Promise.all(
      owners.map(async (o) =>
        recordOf((await storage.list<StoredRecord>(["msg", o])).items[0])
      ),
    );
    const stamps = await Promise.all(
      copies.map((c) => stamp(["msg", c.owner, c.id])),
    );
    assert.equal(new Set(stamps).size, 2);
    const sourceStamp = await stamp(["blob_meta", copies[0].email!.source.id]);
    assert.ok(stamps.every((s) => sourceStamp! < s!));
    assert.deepEqual(await readBlob(storage, copies[9].email!.source), raw(2));
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});
