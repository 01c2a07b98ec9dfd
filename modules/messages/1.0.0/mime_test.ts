import assert from "node:assert/strict";
import { composeEmail, parseEmail } from "./mime.ts";

const bytes = (s: string) => new TextEncoder().encode(s);

Deno.test("mime: headers, groups, encoded words and threading ids are read", async () => {
  const mail = await parseEmail(bytes(
    'Message-ID: <m1@sender.test>\r\nFrom: "Zoé Z" <Zoe@Sender.test>\r\n' +
      "To: bob@example.test, Team: c@d.test, e@f.test;\r\nCc: x@y.test\r\n" +
      "Subject: =?utf-8?q?h=C3=A9llo?= world\r\n" +
      "Date: Tue, 3 Nov 2026 10:00:00 +0000\r\nIn-Reply-To: <p@q>\r\n" +
      "References: <a@b>\r\n <c@d>\r\nX-Folded: one\r\n two\r\n\r\nbody\r\n",
  ));
  assert.equal(mail.message_id, "m1@sender.test");
  assert.equal(mail.from, "zoe@sender.test");
  assert.equal(mail.from_name, "Zoé Z");
  assert.deepEqual(mail.to, ["bob@example.test", "c@d.test", "e@f.test"]);
  assert.deepEqual(mail.cc, ["x@y.test"]);
  assert.equal(mail.subject, "héllo world");
  assert.equal(mail.date?.toISOString(), "2026-11-03T10:00:00.000Z");
  assert.equal(mail.in_reply_to, "p@q");
  assert.deepEqual(mail.references, ["a@b", "c@d"]);
  assert.equal(mail.text, "body\n");
  assert.equal(mail.html, undefined);
  assert.deepEqual(mail.headers.find(([n]) => n === "x-folded"), [
    "x-folded",
    "one two",
  ]);
});

Deno.test("mime: attachments keep their bytes, names, Content-IDs; HTML-only mail gets its text from the HTML", async () => {
  const data = new Uint8Array(3000).map((_, i) => i * 7);
  const raw = await composeEmail({
    from: "a@b.test",
    to: ["c@d.test"],
    cc: [],
    subject: "s",
    body: "<p>Hello <b>there</b></p>",
    format: "html",
    date: new Date(0),
    message_id: "m@b.test",
    attachments: [
      { name: "f.bin", type: "application/octet-stream", content: data },
      {
        name: "i.png",
        type: "image/png",
        content: data.slice(0, 10),
        content_id: "img1",
        inline: true,
      },
    ],
  });
  const mail = await parseEmail(raw);
  assert.equal(mail.html, "<p>Hello <b>there</b></p>");
  assert.match(mail.text, /Hello there/);
  assert.equal(mail.attachments.length, 2);
  const file = mail.attachments.find((a) => a.name === "f.bin")!;
  const image = mail.attachments.find((a) => a.name === "i.png")!;
  assert.deepEqual(file.content, data);
  assert.equal(file.inline, undefined);
  assert.equal(image.content_id, "img1");
  assert.equal(image.inline, true);
  assert.equal(image.type, "image/png");

  const only = await parseEmail(bytes(
    "From: a@b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>Grüße<br>Zoé</p>\r\n",
  ));
  assert.match(only.text, /Grüße\s+Zoé/);
});

Deno.test("mime: a text part that is a file keeps its CRLF lines; an unnamed part is named by its part number", async () => {
  const mail = await parseEmail(bytes(
    "From: a@b\r\nContent-Type: multipart/mixed; boundary=Q\r\n\r\n" +
      "--Q\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n" +
      "--Q\r\nContent-Type: text/csv\r\nContent-Disposition: attachment\r\n\r\na,b\r\n1,2\r\n" +
      "--Q\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@d\r\nSubject: inner\r\n\r\ninner body\r\n--Q--\r\n",
  ));
  assert.equal(mail.text, "see attached");
  assert.equal(
    new TextDecoder().decode(mail.attachments[0].content),
    "a,b\r\n1,2",
  );
  assert.equal(mail.attachments[1].name, "part-3.eml");
  assert.equal(mail.attachments[1].type, "message/rfc822");
  assert.match(
    new TextDecoder().decode(mail.attachments[1].content),
    /^From: c@d\r\nSubject: inner\r\n\r\ninner body$/,
  );
});

Deno.test("mime: a delivery status notification is read into its report", async () => {
  const mail = await parseEmail(bytes(
    "From: MAILER-DAEMON@x.test\r\nTo: a@b.test\r\nSubject: Undelivered\r\n" +
      'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n' +
      "--B\r\nContent-Type: text/plain\r\n\r\nsorry\r\n" +
      "--B\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x.test\r\n\r\n" +
      "Final-Recipient: rfc822; Gone@other.test\r\nAction: failed\r\nStatus: 5.1.1\r\n" +
      "Diagnostic-Code: smtp; 550 no such user\r\n\r\n" +
      "--B\r\nContent-Type: text/rfc822-headers\r\n\r\nMessage-ID: <orig@b.test>\r\nSubject: hi\r\n\r\n--B--\r\n",
  ));
  assert.deepEqual(mail.report, {
    message_id: "orig@b.test",
    recipients: [{
      address: "gone@other.test",
      action: "failed",
      status: "5.1.1",
      diagnostic: "550 no such user",
    }],
  });
  assert.equal(mail.text, "sorry");
});

Deno.test("mime: hostile shapes are read: HTML of 200,000 unclosed comments beside a text part, 400,000 short lines", async () => {
  // postal-mime 2.7.6 (tried in place of mailparser) makes text of such
  // HTML with regular expressions quadratic in its length (200 KB: 20 s;
  // this: minutes), and reads short lines ten times slower than
  // mailparser: these would hang here.
  const html = "<!--x".repeat(200_000);
  const mail = await parseEmail(bytes(
    "From: a@b\r\nContent-Type: multipart/mixed; boundary=X\r\n\r\n" +
      "--X\r\nContent-Type: text/plain\r\n\r\nhi\r\n" +
      `--X\r\nContent-Type: text/html\r\n\r\n${html}\r\n--X--\r\n`,
  ));
  assert.match(mail.text, /^hi/);
  assert.ok(mail.html?.endsWith(html));
  const lines = await parseEmail(
    bytes("Subject: lines\r\n\r\n" + "ab\r\n".repeat(400_000)),
  );
  assert.equal(
    lines.text.split("\n").filter((l) => l === "ab").length,
    400_000,
  );
});

Deno.test("mime: malformed input is read as far as it goes", async () => {
  const mail = await parseEmail(bytes(
    "From: <<broken\r\nContent-Type: multipart/mixed; boundary=Q\r\nSubject: =?bogus?x?zz?=\r\n\r\n" +
      '--Q\r\nContent-Type: application/pdf; name="a.pdf"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0=\r\n',
  ));
  assert.equal(mail.attachments[0].name, "a.pdf");
  assert.deepEqual(mail.attachments[0].content, bytes("%PDF-"));
  assert.equal((await parseEmail(new Uint8Array())).text, "");
  assert.equal((await parseEmail(bytes("no header at all"))).from, "");
});
