import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { simpleParser } from "mailparser";
import { KvStorage } from "../../../workers/sdk/storage.ts";
import type { ModuleContext } from "../../../workers/sdk/mod.ts";
import { storeBlob } from "./attachments.ts";
import { composeOutbound } from "./email.ts";
import { addMessage, type MessageRecord } from "./mailbox.ts";

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
