/**
 * Ordinary email coming in: a real Postfix (the internet's MTA) relays to
 * the AMTP server's SMTP gateway (modules/smtp, its own process), with the
 * DNS (SPF, DKIM, DMARC, MX) served by dnsmasq; swaks and a hand-written
 * client for the protocol's edges and the attacks.
 */

import assert from "node:assert/strict";
import MailComposer from "nodemailer/lib/mail-composer/index.js";
import { Buffer } from "node:buffer";
import { startEmailWorld } from "../testing/email_world.ts";
import { waitFor } from "../testing/helpers.ts";
import { type MailSession, pushOf } from "../testing/mail.ts";
import { postfixAvailable } from "../testing/postfix.ts";
import { dataOf, SmtpConversation } from "../testing/smtp_client.ts";

const enc = new TextEncoder();

async function compose(mail: Record<string, unknown>): Promise<Uint8Array> {
  const composer = new MailComposer(mail);
  const buffer: Buffer = await new Promise((resolve, reject) =>
    composer.compile().build((error: Error | null, message: Buffer) =>
      error ? reject(error) : resolve(message)
    )
  );
  return new Uint8Array(buffer);
}

async function swaks(args: string[]): Promise<string> {
  const out = await new Deno.Command("swaks", {
    args,
    stdout: "piped",
    stderr: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout) +
    new TextDecoder().decode(out.stderr);
}

interface Summary {
  id: string;
  subject: string;
  thread: string;
  global_id: string;
}

async function inbox(bob: MailSession): Promise<Summary[]> {
  return (await bob.call<{ messages: Summary[] }>("list", {})).messages;
}

async function attachment(
  bob: MailSession,
  id: string,
  attachmentId: string,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for (let index = 0;; index++) {
    const got = await bob.call<{ data: Uint8Array; chunks: number }>(
      "attachment_get",
      { id, attachment_id: attachmentId, index },
    );
    parts.push(got.data);
    if (index + 1 >= got.chunks) break;
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

Deno.test({
  name: "email in: Postfix to the gateway, checks, limits and attacks",
  ignore: !postfixAvailable(),
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const mail = await startEmailWorld({
    AMTP_SMTP_MAX_SIZE: "300000",
    AMTP_SMTP_MAX_RECIPIENTS: "5",
    AMTP_SMTP_MAX_PER_IP: "4",
    AMTP_SMTP_RATE: "40",
  });
  const { world, postfix, port } = mail;
  try {
    const bob = await world.mail("bob@example.test");
    await world.addUser("amy@example.test");

    let firstId = "";
    await t.step(
      "a DKIM-signed multipart message through Postfix arrives, checked, with its push",
      async () => {
        const picture = crypto.getRandomValues(new Uint8Array(50_000));
        const raw = await mail.sign(
          await compose({
            from: "Zoë Sender <zoe@sender.test>",
            to: "bob@example.test",
            subject: "Grüße aus 東京 ✓",
            messageId: "<first@sender.test>",
            text: "Hello Bob,\nthe picture is attached.\n",
            html: "<p>Hello <b>Bob</b></p><script>alert(1)</script>",
            attachments: [{
              filename: "picture.bin",
              content: Buffer.from(picture),
            }],
          }),
        );
        const reply = await postfix.submit("zoe@sender.test", [
          "bob@example.test",
        ], raw);
        assert.match(reply, /queued/);
        const push = await pushOf(
          bob,
          "message_new",
          (d) => d.subject === "Grüße aus 東京 ✓",
          20_000,
        );
        firstId = push.id as string;
        const got = await bob.call<Record<string, unknown>>("get", {
          id: firstId,
        });
        const email = got.email as {
          auth: {
            spf: { result: string };
            dkim: { result: string; domain: string }[];
            dmarc: { result: string };
            tls: boolean;
          };
          html: { id: string };
          source: { id: string };
          mail_from: string;
        };
        assert.deepStrictEqual(email.auth.spf.result, "pass");
        assert.deepStrictEqual(email.auth.dkim[0].result, "pass");
        assert.deepStrictEqual(email.auth.dkim[0].domain, "sender.test");
        assert.deepStrictEqual(email.auth.dmarc.result, "pass");
        // Postfix used STARTTLS (opportunistic): the gateway offered it.
        assert.deepStrictEqual(email.auth.tls, true);
        assert.deepStrictEqual(email.mail_from, "zoe@sender.test");
        assert.deepStrictEqual(got.from, "zoe@sender.test");
        assert.match(got.body as string, /the picture is attached/);
        const files = got.attachments as { id: string; name: string }[];
        assert.deepStrictEqual(files.map((f) => f.name), ["picture.bin"]);
        assert.deepStrictEqual(
          await attachment(bob, firstId, files[0].id),
          picture,
        );
        // The HTML is kept as it came (clients show it sanitized).
        assert.match(
          new TextDecoder().decode(
            await attachment(bob, firstId, email.html.id),
          ),
          /<b>Bob<\/b>/,
        );
        // The source is kept too, with the signature as it arrived.
        assert.match(
          new TextDecoder().decode(
            await attachment(bob, firstId, email.source.id),
          ),
          /DKIM-Signature:/,
        );
        assert.match(await postfix.log(), /TLS connection established/);
      },
    );

    await t.step(
      "an answer by email joins the conversation's thread",
      async () => {
        const raw = await mail.sign(
          await compose({
            from: "zoe@sender.test",
            to: "bob@example.test",
            subject: "Re: Grüße",
            messageId: "<second@sender.test>",
            inReplyTo: "<first@sender.test>",
            references: ["<first@sender.test>"],
            text: "and more\n",
          }),
        );
        await postfix.submit("zoe@sender.test", ["bob@example.test"], raw);
        const push = await pushOf(
          bob,
          "message_new",
          (d) => d.subject === "Re: Grüße",
          20_000,
        );
        const first = (await inbox(bob)).find((m) => m.id === firstId)!;
        assert.deepStrictEqual(push.thread, first.thread);
      },
    );

    await t.step(
      "a forgery of a DMARC reject domain is refused (550)",
      async () => {
        const out = await swaks([
          "--server",
          `127.0.0.1:${port}`,
          "--from",
          "ceo@bank.test",
          "--to",
          "bob@example.test",
          "--header",
          "From: ceo@bank.test",
          "--header",
          "Subject: wire the money",
        ]);
        assert.match(out, /<\*\* 550 5\.7\.1 DMARC policy of bank\.test/);
        assert.ok(
          !(await inbox(bob)).some((m) => m.subject === "wire the money"),
        );
      },
    );

    await t.step("swaks: an unknown recipient gets 550 at RCPT", async () => {
      const out = await swaks([
        "--server",
        `127.0.0.1:${port}`,
        "--from",
        "zoe@sender.test",
        "--to",
        "nobody@example.test",
        "--quit-after",
        "RCPT",
      ]);
      assert.match(out, /<\*\* 550 5\.1\.1/);
      // A domain not hosted here: no relaying.
      const relay = await swaks([
        "--server",
        `127.0.0.1:${port}`,
        "--from",
        "zoe@sender.test",
        "--to",
        "someone@elsewhere.test",
        "--quit-after",
        "RCPT",
      ]);
      assert.match(relay, /<\*\* 55\d /);
    });

    await t.step(
      "swaks: STARTTLS, PIPELINING, the extensions offered",
      async () => {
        const out = await swaks([
          "--server",
          `127.0.0.1:${port}`,
          "--from",
          "zoe@sender.test",
          "--to",
          "bob@example.test",
          "--tls",
          "--pipeline",
          "--header",
          "Subject: over tls, pipelined",
        ]);
        for (
          const ext of [
            "STARTTLS",
            "PIPELINING",
            "8BITMIME",
            "SMTPUTF8",
            "SIZE",
          ]
        ) {
          assert.match(out, new RegExp(`<-  250[- ]${ext}`));
        }
        assert.match(out, /TLS started/);
        assert.match(out, /<~ {2}250 2\.0\.0 Ok: stored/);
      },
    );

    await t.step("swaks: a message over the size limit gets 552", async () => {
      // Announced with SIZE: refused at MAIL FROM.
      const smtp = await SmtpConversation.open(port);
      try {
        assert.deepStrictEqual((await smtp.reply()).code, 220);
        assert.deepStrictEqual(
          (await smtp.command("EHLO client.test")).code,
          250,
        );
        assert.deepStrictEqual(
          (await smtp.command("MAIL FROM:<zoe@sender.test> SIZE=900000")).code,
          552,
        );
      } finally {
        smtp.close();
      }
      // Not announced: counted as it arrives, refused at the end.
      const big = await SmtpConversation.open(port);
      try {
        await big.reply();
        await big.command("EHLO client.test");
        await big.command("MAIL FROM:<zoe@sender.test>");
        await big.command("RCPT TO:<bob@example.test>");
        assert.deepStrictEqual((await big.command("DATA")).code, 354);
        const line = "x".repeat(998) + "\r\n";
        await big.write(
          enc.encode("Subject: big\r\n\r\n" + line.repeat(400) + ".\r\n"),
        );
        assert.deepStrictEqual((await big.reply()).code, 552);
      } finally {
        big.close();
      }
    });

    await t.step("malformed MIME is stored without loss", async () => {
      const raw = enc.encode(
        "From: zoe@sender.test\r\nTo: bob@example.test\r\n" +
          "Subject: broken\r\nMessage-ID: <broken@sender.test>\r\n" +
          'Content-Type: multipart/mixed; boundary="never-closed"\r\n\r\n' +
          "--never-closed\r\nContent-Type: text/plain\r\n" +
          "Content-Transfer-Encoding: base64\r\n\r\n" +
          "@@@ not base64 \xff\r\n" +
          '--never-closed\r\nContent-Type: image/png; name="x.png\r\n\r\n' +
          "half a part\r\n",
      );
      const smtp = await SmtpConversation.open(port);
      try {
        await smtp.reply();
        await smtp.command("EHLO client.test");
        await smtp.command("MAIL FROM:<zoe@sender.test>");
        await smtp.command("RCPT TO:<bob@example.test>");
        assert.deepStrictEqual((await smtp.command("DATA")).code, 354);
        await smtp.write(dataOf(raw));
        assert.deepStrictEqual((await smtp.reply()).code, 250);
      } finally {
        smtp.close();
      }
      let stored: Summary | undefined;
      await waitFor(
        async () => {
          stored = (await inbox(bob)).find((m) => m.subject === "broken");
          return stored !== undefined;
        },
        10_000,
        "the broken message",
      );
      const got = await bob.call<{ email: { source: { id: string } } }>(
        "get",
        { id: stored!.id },
      );
      // Byte for byte what was sent (undone dot-stuffing aside).
      assert.deepStrictEqual(
        await attachment(bob, stored!.id, got.email.source.id),
        raw,
      );
    });

    await t.step("too many recipients: 452 after the limit", async () => {
      const smtp = await SmtpConversation.open(port);
      try {
        await smtp.reply();
        await smtp.command("EHLO client.test");
        await smtp.command("MAIL FROM:<zoe@sender.test>");
        const codes: number[] = [];
        // Repeated addresses count too.
        for (let i = 0; i < 7; i++) {
          codes.push(
            (await smtp.command(
              `RCPT TO:<${i % 2 ? "bob" : "amy"}@example.test>`,
            )).code,
          );
        }
        assert.deepStrictEqual(codes, [250, 250, 250, 250, 250, 452, 452]);
        // A new transaction starts the count again.
        await smtp.command("RSET");
        await smtp.command("MAIL FROM:<zoe@sender.test>");
        assert.deepStrictEqual(
          (await smtp.command("RCPT TO:<bob@example.test>")).code,
          250,
        );
      } finally {
        smtp.close();
      }
    });

    await t.step(
      "an address harvest: 421 and the connection ends",
      async () => {
        const smtp = await SmtpConversation.open(port);
        try {
          await smtp.reply();
          await smtp.command("EHLO client.test");
          await smtp.command("MAIL FROM:<zoe@sender.test>");
          const codes: number[] = [];
          for (let i = 0; i < 12; i++) {
            await smtp.command("RSET");
            await smtp.command("MAIL FROM:<zoe@sender.test>");
            codes.push(
              (await smtp.command(`RCPT TO:<guess${i}@example.test>`)).code,
            );
            if (codes.at(-1) === 421) break;
          }
          assert.deepStrictEqual(codes.slice(0, 10), Array(10).fill(550));
          assert.deepStrictEqual(codes.at(-1), 421);
          assert.deepStrictEqual((await smtp.reply(5000)).code, 0); // closed
        } finally {
          smtp.close();
        }
      },
    );

    await t.step(
      "pipelining abuse: a thousand commands in one write",
      async () => {
        const smtp = await SmtpConversation.open(port);
        try {
          await smtp.reply();
          await smtp.command("EHLO client.test");
          let batch = "MAIL FROM:<zoe@sender.test>\r\n";
          for (let i = 0; i < 1000; i++) {
            batch += "RCPT TO:<bob@example.test>\r\n";
          }
          await smtp.write(batch);
          const codes = new Map<number, number>();
          for (let i = 0; i < 1001; i++) {
            const { code } = await smtp.reply(10_000);
            if (code === 0) break;
            codes.set(code, (codes.get(code) ?? 0) + 1);
          }
          // At most the limit accepted (MAIL and five recipients), never more.
          assert.ok((codes.get(250) ?? 0) <= 6, JSON.stringify([...codes]));
        } finally {
          smtp.close();
        }
        // The gateway still serves.
        const out = await swaks([
          "--server",
          `127.0.0.1:${port}`,
          "--to",
          "bob@example.test",
          "--from",
          "zoe@sender.test",
          "--quit-after",
          "RCPT",
        ]);
        assert.match(out, /<- {2}250 /);
      },
    );

    await t.step(
      "a connection flood from one address: 421 past the limit",
      async () => {
        const open: SmtpConversation[] = [];
        try {
          const greetings: number[] = [];
          for (let i = 0; i < 6; i++) {
            const smtp = await SmtpConversation.open(port);
            open.push(smtp);
            greetings.push((await smtp.reply(10_000)).code);
          }
          // Four at most (a connection Postfix keeps may count among them).
          assert.ok(greetings.filter((c) => c === 220).length <= 4);
          assert.ok(greetings.filter((c) => c === 421).length >= 2);
        } finally {
          for (const smtp of open) smtp.close();
        }
      },
    );

    await t.step(
      "a flood of messages from one address: 450 past the rate",
      async () => {
        const smtp = await SmtpConversation.open(port);
        try {
          await smtp.reply();
          await smtp.command("EHLO client.test");
          const codes: number[] = [];
          for (let i = 0; i < 45; i++) {
            codes.push(
              (await smtp.command("MAIL FROM:<zoe@sender.test>")).code,
            );
            await smtp.command("RSET");
          }
          assert.ok(codes.includes(450), JSON.stringify(codes));
          assert.ok(codes.indexOf(450) <= 40);
        } finally {
          smtp.close();
        }
      },
    );
  } finally {
    await mail.close();
  }
});

Deno.test({
  name:
    "email in: a silent client is dropped; 250 only once durable (SIGKILL right after it)",
  ignore: !postfixAvailable(),
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const mail = await startEmailWorld({ AMTP_SMTP_TIMEOUT: "5" });
  const { world, port } = mail;
  try {
    await world.addUser("bob@example.test");
    // A client that connects and says nothing holds its place only until
    // the timeout: then 421 and the connection ends (the wait allows 4x).
    const silent = await SmtpConversation.open(port);
    try {
      assert.equal((await silent.reply()).code, 220);
      const dropped = await silent.reply(20_000);
      assert.equal(dropped.code, 421, `not dropped: ${dropped.text}`);
      assert.equal((await silent.reply(1000)).code, 0);
    } finally {
      silent.close();
    }
    const node = world.nodes[0];
    const raw = enc.encode(
      "From: zoe@sender.test\r\nTo: bob@example.test\r\n" +
        "Subject: kept\r\nMessage-ID: <kept@sender.test>\r\n\r\nsurvives\r\n",
    );
    const smtp = await SmtpConversation.open(port);
    await smtp.reply();
    await smtp.command("EHLO client.test");
    await smtp.command("MAIL FROM:<zoe@sender.test>");
    await smtp.command("RCPT TO:<bob@example.test>");
    await smtp.command("DATA");
    await smtp.write(dataOf(raw));
    const done = await smtp.reply();
    // The moment the 250 is read: the whole server, gateway and all, dies.
    await node.server!.stop("SIGKILL");
    smtp.close();
    assert.deepStrictEqual(done.code, 250);
    await world.start(node);
    const bob = await world.mail("bob@example.test");
    const list = await bob.call<{ messages: Summary[] }>("list", {});
    assert.deepStrictEqual(list.messages.map((m) => m.subject), ["kept"]);
  } finally {
    await mail.close();
  }
});
