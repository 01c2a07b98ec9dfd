/**
 * Attachment limits per domain and per user (`AMTP_MESSAGES_MAX_ATTACHMENT_FOR`)
 * over the default (`AMTP_MESSAGES_MAX_ATTACHMENT`), on a real server: a
 * domain allowed larger files uploads one above the default, streamed in
 * chunks and verified; others are refused with 206 before any byte is taken.
 */

import assert from "node:assert/strict";
import {
  attachmentLimits,
  maxAttachmentFor,
} from "../modules/messages/1.0.0/settings.ts";
import { type MailSession, mailSession } from "../testing/mail.ts";
import { startAmtp } from "../testing/server.ts";
import { sha256Hex } from "../shared/pem.ts";

const CHUNK = 256 * 1024;

Deno.test("attachment limits: parsed per domain and address, the address first", () => {
  const limits = attachmentLimits(
    "big.org=3000000, Boss@Small.org=5000,bad,x=-1,y=abc,=5",
  );
  assert.deepEqual([...limits], [["big.org", 3000000], [
    "boss@small.org",
    5000,
  ]]);
  assert.equal(maxAttachmentFor("a@big.org", 10, limits), 3000000);
  assert.equal(maxAttachmentFor("boss@small.org", 10, limits), 5000);
  assert.equal(maxAttachmentFor("other@small.org", 10, limits), 10);
});

Deno.test("attachment limits: a domain allowed larger files uploads above the default; a user held lower is refused", async () => {
  const root = await Deno.makeTempDir({ prefix: "amtp-limits-" });
  // A server process: the module reads its settings from the environment.
  const amtp = await startAmtp(root, "server", {
    AMTP_MESSAGES_MAX_ATTACHMENT: String(CHUNK),
    AMTP_MESSAGES_MAX_ATTACHMENT_FOR: `big.org=${4 * CHUNK},tiny@big.org=1000`,
  });
  await amtp.admin.call("admin_add_domain", {
    admin_token: amtp.adminToken,
    domain: "big.org",
  });
  const sessions: MailSession[] = [];
  const session = async (address: string) => {
    const key = await amtp.user(address);
    const s = await mailSession(await amtp.connect(), address, key);
    sessions.push(s);
    return s;
  };
  try {
    const data = crypto.getRandomValues(new Uint8Array(65536));
    const file = new Uint8Array(3 * CHUNK);
    for (let at = 0; at < file.byteLength; at += data.byteLength) {
      file.set(data, at);
    }
    const start = (
      s: MailSession,
      size: number,
    ) =>
      s.request("attachment_upload", {
        name: "f.bin",
        size,
        sha256: "0".repeat(64),
      });
    const plain = await session("a@bench.test");
    const refused = await start(plain, CHUNK + 1);
    assert.equal(refused.error, 206, refused.message);
    const tiny = await session("tiny@big.org");
    assert.equal((await start(tiny, 1001)).error, 206);
    const big = await session("b@big.org");
    assert.equal((await start(big, 4 * CHUNK + 1)).error, 206);
    const started = await big.call<{ upload_id: string }>(
      "attachment_upload",
      { name: "f.bin", size: file.byteLength, sha256: await sha256Hex(file) },
    );
    for (let index = 0; index * CHUNK < file.byteLength; index++) {
      await big.call("attachment_upload_chunk", {
        upload_id: started.upload_id,
        index,
        data: file.subarray(index * CHUNK, (index + 1) * CHUNK),
      });
    }
    const done = await big.call<{ size: number }>("attachment_upload_finish", {
      upload_id: started.upload_id,
    });
    assert.equal(done.size, file.byteLength);
  } finally {
    for (const s of sessions) s.client.close();
    amtp.admin.close();
    await amtp.server.stop();
    await Deno.remove(root, { recursive: true });
  }
});
