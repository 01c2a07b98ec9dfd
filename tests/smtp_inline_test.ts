/**
 * Inline images (`cid:` parts of `multipart/related`) through the email
 * gateway, both ways, byte for byte: an HTML email with an inline image
 * received over SMTP keeps the image's Content-ID and inline placement; an
 * AMTP user's HTML message with an inline image (an attachment uploaded with
 * `content_id` and `inline`) reaches a real Postfix as a related part the
 * HTML names.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import MailComposer from "nodemailer/lib/mail-composer/index.js";
import { simpleParser } from "mailparser";
import { startEmailWorld } from "../testing/email_world.ts";
import { waitFor } from "../testing/helpers.ts";
import { pushOf } from "../testing/mail.ts";
import { postfixAvailable } from "../testing/postfix.ts";
import { sendSmtp } from "../testing/smtp_client.ts";
import { sha256Hex } from "../shared/pem.ts";

/** Bytes that look like a PNG and are not text. */
function image(size: number, seed: number): Uint8Array {
  const out = new Uint8Array(size).map((_, i) => (i * 131 + seed * 7) & 0xff);
  out.set([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  return out;
}

Deno.test({
  name: "email inline images: cid parts in and out, byte for byte",
  ignore: !postfixAvailable(),
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const mail = await startEmailWorld({ AMTP_FEDERATION_LIFETIME: "60" });
  const { world, postfix } = mail;
  try {
    const bob = await world.mail("bob@example.test");

    await t.step("in: an HTML email with an inline image", async () => {
      const logo = image(30_000, 1);
      const raw = await new Promise<Buffer>((resolve, reject) =>
        new MailComposer({
          from: "carol@other.test",
          to: "bob@example.test",
          subject: "With a logo",
          text: "See the logo.",
          html: '<p>Our logo: <img src="cid:logo@other.test"></p>',
          attachments: [{
            filename: "logo.png",
            contentType: "image/png",
            content: Buffer.from(logo),
            cid: "logo@other.test",
          }],
        }).compile().build((error: Error | null, message: Buffer) =>
          error ? reject(error) : resolve(message)
        )
      );
      await sendSmtp({
        port: mail.port,
        from: "carol@other.test",
        to: ["bob@example.test"],
        raw: new Uint8Array(raw),
      });
      const push = await pushOf(
        bob,
        "message_new",
        (d) => d.subject === "With a logo",
        30_000,
      );
      const got = await bob.call<{
        attachments: {
          id: string;
          name: string;
          type: string;
          content_id?: string;
          inline?: boolean;
          sha256: string;
        }[];
        email: { html?: { id: string } };
      }>("get", { id: push.id });
      const part = got.attachments.find((a) => a.name === "logo.png");
      assert.ok(part, JSON.stringify(got.attachments));
      assert.equal(part.content_id, "logo@other.test");
      assert.equal(part.inline, true);
      assert.equal(part.type, "image/png");
      assert.equal(part.sha256, await sha256Hex(logo));
      const bytes = await bob.call<{ data: Uint8Array }>("attachment_get", {
        id: push.id,
        attachment_id: part.id,
      });
      assert.deepEqual(new Uint8Array(bytes.data), logo);
      // The HTML body still names it.
      const html = await bob.call<{ data: Uint8Array }>("attachment_get", {
        id: push.id,
        attachment_id: got.email.html!.id,
      });
      assert.match(new TextDecoder().decode(html.data), /cid:logo@other\.test/);
    });

    await t.step(
      "out: an AMTP HTML message with an inline image, to Postfix",
      async () => {
        const chart = image(70_000, 2);
        const started = await bob.call<{ upload_id: string }>(
          "attachment_upload",
          {
            name: "chart.png",
            type: "image/png",
            size: chart.byteLength,
            sha256: await sha256Hex(chart),
            content_id: "chart@example.test",
            inline: true,
          },
        );
        await bob.call("attachment_upload_chunk", {
          upload_id: started.upload_id,
          index: 0,
          data: chart,
        });
        const { attachment_id } = await bob.call<{ attachment_id: string }>(
          "attachment_upload_finish",
          { upload_id: started.upload_id },
        );
        // A content id with an angle bracket is refused.
        const bad = await bob.request("attachment_upload", {
          name: "x.png",
          size: 1,
          sha256: "0".repeat(64),
          content_id: "<x@example.test>",
        });
        assert.equal(bad.error, 4, bad.message);
        await bob.call("send", {
          to: ["carol@other.test"],
          subject: "Chart inside",
          format: "html",
          body: '<p>The chart: <img src="cid:chart@example.test"></p>',
          attachments: [attachment_id],
        });
        let parsed: Awaited<ReturnType<typeof simpleParser>> | undefined;
        await waitFor(
          async () => {
            for (const file of await postfix.maildir("carol@other.test")) {
              // cid: links as sent (mailparser turns them into data: URLs otherwise).
              const p = await simpleParser(Buffer.from(file), {
                keepCidLinks: true,
              });
              if (p.subject === "Chart inside") parsed = p;
            }
            return parsed !== undefined;
          },
          60_000,
          "the message in carol's Maildir",
        );
        const part = parsed!.attachments.find((a) =>
          a.filename === "chart.png"
        );
        assert.ok(part, "the inline image");
        assert.equal(part.cid, "chart@example.test");
        assert.equal(part.contentDisposition, "inline");
        assert.equal(part.related, true);
        assert.deepEqual(new Uint8Array(part.content), chart);
        assert.match(String(parsed!.html), /cid:chart@example\.test/);
      },
    );
  } finally {
    await mail.close();
  }
});
