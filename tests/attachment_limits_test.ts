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
import { waitFor } from "../testing/helpers.ts";
import { ErrorCode } from "../shared/errors.ts";
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

Deno.test("attachment expiry: an abandoned upload and a finished one never sent are removed after AMTP_MESSAGES_BLOB_EXPIRY", async () => {
  const root = await Deno.makeTempDir({ prefix: "amtp-expiry-" });
  const amtp = await startAmtp(root, "server", {
    AMTP_MESSAGES_BLOB_EXPIRY: "1",
  });
  const u = await mailSession(
    await amtp.connect(),
    "u@bench.test",
    amtp.keys.get("u@bench.test")!,
  );
  try {
    const file = new Uint8Array(2 * CHUNK).fill(7);
    const start = () =>
      u.call<{ upload_id: string }>("attachment_upload", {
        name: "f.bin",
        size: file.byteLength,
        sha256: "0".repeat(64),
      });
    // Abandoned after its first chunk.
    const abandoned = await start();
    await u.call("attachment_upload_chunk", {
      upload_id: abandoned.upload_id,
      index: 0,
      data: file.subarray(0, CHUNK),
    });
    // Finished, never sent.
    const small = new Uint8Array([1, 2, 3]);
    const kept = await u.call<{ upload_id: string }>("attachment_upload", {
      name: "s.bin",
      size: small.byteLength,
      sha256: await sha256Hex(small),
    });
    await u.call("attachment_upload_chunk", {
      upload_id: kept.upload_id,
      index: 0,
      data: small,
    });
    const { attachment_id } = await u.call<{ attachment_id: string }>(
      "attachment_upload_finish",
      { upload_id: kept.upload_id },
    );
    const gone = async (uploadId: string) =>
      (await u.request("attachment_upload_status", { upload_id: uploadId }))
        .error === ErrorCode.NOT_FOUND;
    await waitFor(
      async () => await gone(abandoned.upload_id) && await gone(kept.upload_id),
      20_000,
      "the uploads removed",
    );
    // The finished attachment went with its upload: it can no longer be sent.
    const send = await u.request("send", {
      to: ["u@bench.test"],
      subject: "late",
      body: "x",
      attachments: [attachment_id],
    });
    assert.equal(send.error, ErrorCode.NOT_FOUND, send.message);
  } finally {
    u.client.close();
    amtp.admin.close();
    await amtp.server.stop();
    await Deno.remove(root, { recursive: true });
  }
});
