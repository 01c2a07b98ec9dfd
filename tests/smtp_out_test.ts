/**
 * Ordinary email going out: an AMTP user writes to an address whose domain
 * has no `amtp-servers` record but an MX; the outbound queue's email route
 * composes it (the messages module), signs it (the core's DKIM keys of the
 * sending domain) and hands it to the gateway, which delivers it to a real
 * Postfix (a Maildir). The test checks the signature with mailauth against
 * the keys published in dnsmasq, and the attachment byte for byte.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { authenticate } from "mailauth";
import { simpleParser } from "mailparser";
import { startEmailWorld } from "../testing/email_world.ts";
import { waitFor } from "../testing/helpers.ts";
import { type MailSession, pushOf, uploadAttachment } from "../testing/mail.ts";
import { postfixAvailable } from "../testing/postfix.ts";
import { runCli } from "../testing/process.ts";
import { certificateHash } from "../shared/pem.ts";
import { ErrorCode } from "../shared/errors.ts";
import type { World } from "../testing/federation_world.ts";

/** Upload `data` named `name` (the order these tests pass them in). */
const upload = (s: MailSession, data: Uint8Array, name: string) =>
  uploadAttachment(s, name, data);

interface DnsRow {
  name: string;
  type: string;
  value: string;
  status: string;
  message: string;
}

/** What `admin_dns_check` says of example.test. */
async function dnsCheck(world: World): Promise<DnsRow[]> {
  const node = world.nodes[0];
  const admin = await world.connect(node);
  try {
    const check = await admin.call<{ records: DnsRow[] }>("admin_dns_check", {
      admin_token: node.adminToken,
      domain: "example.test",
    });
    return check.records;
  } finally {
    admin.close();
  }
}

/** A resolver for mailauth over the world's dnsmasq. */
function resolverOf(world: World) {
  const [ipAddr, port] = world.dns.address.split(":");
  return async (name: string, type: string) => {
    try {
      if (type === "TXT") {
        return await Deno.resolveDns(name, "TXT", {
          nameServer: { ipAddr, port: Number(port) },
        });
      }
      if (type === "A") {
        return await Deno.resolveDns(name, "A", {
          nameServer: { ipAddr, port: Number(port) },
        });
      }
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) {
        throw Object.assign(new Error("not found"), { code: "ENOTFOUND" });
      }
      throw error;
    }
    throw Object.assign(new Error("not found"), { code: "ENOTFOUND" });
  };
}

Deno.test({
  name: "email out: through the queue, signed, to a real Postfix",
  ignore: !postfixAvailable(),
  sanitizeOps: false,
  sanitizeResources: false,
}, async (t) => {
  const mail = await startEmailWorld({
    // The queue tries again each second, and gives up after 30.
    AMTP_FEDERATION_LIFETIME: "30",
  });
  const { world, postfix } = mail;
  try {
    const bob = await world.mail("bob@example.test");

    await t.step(
      "amtp dns prints the email records, then finds them",
      async () => {
        let rows = await dnsCheck(world);
        const email = rows.filter((r) =>
          r.type === "MX" || r.name.includes("._domainkey.") ||
          r.name.startsWith("_dmarc.") || r.value.startsWith("v=spf1")
        );
        assert.deepStrictEqual(
          email.map((r) => [r.type, r.status]),
          [["MX", "ok"], ["TXT", "missing"], ["TXT", "missing"], [
            "TXT",
            "missing",
          ], ["TXT", "missing"]],
        );
        const dkim = rows.filter((r) => r.name.includes("._domainkey."));
        assert.deepStrictEqual(dkim.length, 2); // Ed25519 and RSA
        assert.match(dkim[0].value, /k=ed25519/);
        assert.match(dkim[1].value, /k=rsa/);
        // Published as printed: all ok.
        await mail.publish([
          ...dkim.map((r): [string, string] => [r.name, r.value]),
          ["_dmarc.example.test", "v=DMARC1; p=reject"],
          ["example.test", "v=spf1 mx -all"],
        ]);
        rows = await dnsCheck(world);
        for (const r of rows.filter((r) => r.status !== "ok")) {
          assert.fail(`${r.name} ${r.type}: ${r.status} ${r.message}`);
        }
        // The CLI prints them.
        const node = world.nodes[0];
        const env = {
          AMTP_DATA: `${node.dir}/data`,
          AMTP_CLI_STATE: `${world.root}/cli.json`,
        };
        const login = await runCli([
          "login",
          "--admin",
          "admin",
          "--key",
          `${node.dir}/data/admin.key`,
          "--server",
          `127.0.0.1:${node.port}`,
          "--cert-hash",
          await certificateHash(node.certPem),
        ], env);
        assert.deepStrictEqual(login.code, 0, login.stderr);
        const cli = await runCli(["dns", "example.test"], env);
        assert.deepStrictEqual(cli.code, 0, cli.stdout + cli.stderr);
        assert.match(
          cli.stdout,
          /ok\s+example\.test\. IN MX 10 mx\.example\.test\./,
        );
        assert.match(
          cli.stdout,
          /ok\s+amtp-ed-[0-9a-f]+\._domainkey\.example\.test/,
        );
      },
    );

    await t.step(
      "a message with an attachment arrives in Postfix's Maildir, DKIM valid",
      async () => {
        const data = crypto.getRandomValues(new Uint8Array(40_000));
        const attachment = await upload(bob, data, "report.bin");
        const sent = await bob.call<{ recipients: { status: string }[] }>(
          "send",
          {
            to: ["carol@other.test"],
            subject: "Ünïcode subject, from AMTP",
            body: "Hello Carol,\nsee the report.\n",
            attachments: [attachment],
          },
        );
        assert.deepStrictEqual(sent.recipients[0].status, "queued");
        let files: Uint8Array[] = [];
        await waitFor(
          async () => {
            files = await postfix.maildir("carol@other.test");
            return files.length > 0;
          },
          30_000,
          "the message in carol's Maildir",
        );
        const raw = files[0];
        const parsed = await simpleParser(Buffer.from(raw));
        assert.deepStrictEqual(parsed.subject, "Ünïcode subject, from AMTP");
        assert.match(parsed.text ?? "", /see the report/);
        assert.deepStrictEqual(parsed.attachments.length, 1);
        assert.deepStrictEqual(parsed.attachments[0].filename, "report.bin");
        assert.deepStrictEqual(
          new Uint8Array(parsed.attachments[0].content),
          data,
        );
        // Both signatures verify against the published keys.
        const result = await authenticate(Buffer.from(raw), {
          ip: "127.0.0.1",
          helo: "mx.example.test",
          sender: "bob@example.test",
          mta: "postfix.other.test",
          resolver: resolverOf(world) as never,
          disableArc: true,
          disableBimi: true,
        });
        const dkim = result.dkim.results.map((r) => [
          r.signingDomain,
          r.status?.result,
        ]);
        assert.deepStrictEqual(dkim, [["example.test", "pass"], [
          "example.test",
          "pass",
        ]]);
        assert.match(await postfix.log(), /TLS connection established from/);
      },
    );

    await t.step(
      "a thread started in an email client, answered from AMTP, one conversation on both sides",
      async () => {
        const eml = await Deno.readFile(
          new URL("./fixtures/email/thunderbird.eml", import.meta.url),
        );
        await postfix.submit("carol@other.test", ["bob@example.test"], eml);
        const first = await pushOf(
          bob,
          "message_new",
          (d) => d.subject === "Café on Saturday?",
          20_000,
        );
        const original = "4f1c2a9e-7d3b-4c55-9a1e-2b6f0c8d1e77@other.test";
        assert.deepStrictEqual(first.global_id, original);
        // Bob answers from AMTP.
        const reply = await bob.call<{ id: string; global_id: string }>(
          "send",
          {
            to: ["carol@other.test"],
            subject: "Re: Café on Saturday?",
            body: "Yes, see you there.\n",
            in_reply_to: first.id,
          },
        );
        let answer: Awaited<ReturnType<typeof simpleParser>> | undefined;
        await waitFor(
          async () => {
            for (const file of await postfix.maildir("carol@other.test")) {
              const parsed = await simpleParser(Buffer.from(file));
              if (parsed.subject === "Re: Café on Saturday?") answer = parsed;
            }
            return answer !== undefined;
          },
          30_000,
          "the answer in carol's Maildir",
        );
        // Her mail client threads it under her message.
        assert.deepStrictEqual(answer!.inReplyTo, `<${original}>`);
        assert.match(String(answer!.references), new RegExp(original));
        assert.deepStrictEqual(answer!.messageId, `<${reply.global_id}>`);
        // She answers that by email: it joins the same thread at Bob's.
        const again = new TextEncoder().encode(
          "From: Carol Example <carol@other.test>\r\nTo: bob@example.test\r\n" +
            "Subject: Re: Café on Saturday?\r\n" +
            "Message-ID: <c2@other.test>\r\n" +
            `In-Reply-To: <${reply.global_id}>\r\n` +
            `References: <${original}> <${reply.global_id}>\r\n` +
            "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=UTF-8\r\n" +
            "\r\nGreat!\r\n",
        );
        await postfix.submit("carol@other.test", ["bob@example.test"], again);
        const third = await pushOf(
          bob,
          "message_new",
          (d) => d.global_id === "c2@other.test",
          20_000,
        );
        assert.deepStrictEqual(third.thread, first.thread);
        const thread = await bob.call<{ messages: { global_id: string }[] }>(
          "thread",
          { id: third.id },
        );
        assert.deepStrictEqual(
          thread.messages.map((m) => m.global_id),
          [original, reply.global_id, "c2@other.test"],
        );
      },
    );

    await t.step("Postfix down: retried, then delivered once", async () => {
      await postfix.stop();
      await bob.call("send", {
        to: ["dave@other.test"],
        subject: "while postfix was down",
        body: "patience\n",
      });
      // Attempts fail while it is down (the queue retries each second).
      await new Promise((r) => setTimeout(r, 2500));
      assert.deepStrictEqual(
        (await postfix.maildir("dave@other.test")).length,
        0,
      );
      await postfix.start();
      await waitFor(
        async () => (await postfix.maildir("dave@other.test")).length > 0,
        30_000,
        "delivery after restart",
      );
      await new Promise((r) => setTimeout(r, 2500));
      assert.deepStrictEqual(
        (await postfix.maildir("dave@other.test")).length,
        1,
      );
    });

    await t.step("a 5xx bounces at once, with the remote's words", async () => {
      await bob.call("send", {
        to: ["nobody@other.test"],
        subject: "to no one",
        body: "?\n",
      });
      const bounce = await pushOf(
        bob,
        "message_new",
        (d) =>
          String(d.from).startsWith("mailer-daemon@") &&
          String(d.subject).includes("to no one"),
        20_000,
      );
      const got = await bob.call<{ body: string }>("get", { id: bounce.id });
      assert.match(got.body, /nobody@other\.test/);
      // Postfix's own refusal text.
      assert.match(got.body, /550|User unknown|Recipient address rejected/i);
    });

    await t.step(
      "a DSN that comes back is a bounce of the message it reports on",
      async () => {
        const sent = await bob.call<{ id: string }>(
          "send",
          { to: ["gone@other.test"], subject: "to a closed box", body: "?\n" },
        );
        // Postfix takes it (250), fails to deliver it, and reports by email.
        const dsn = await pushOf(
          bob,
          "message_new",
          (d) =>
            /^mailer-daemon@(postfix\.)?other\.test$/i.test(String(d.from)),
          30_000,
        );
        const got = await bob.call<{
          thread: string;
          email: {
            report: {
              message: string;
              recipients: { address: string; action: string }[];
            };
          };
        }>("get", { id: dsn.id });
        assert.deepStrictEqual(got.email.report.message, sent.id);
        assert.deepStrictEqual(
          got.email.report.recipients[0].address,
          "gone@other.test",
        );
        assert.deepStrictEqual(got.email.report.recipients[0].action, "failed");
        const original = await bob.call<{ thread: string }>("get", {
          id: sent.id,
        });
        assert.deepStrictEqual(got.thread, original.thread);
      },
    );

    await t.step("an encrypted message never leaves as email", async () => {
      const answer = await bob.call<{
        recipients: { address: string; email: string[] }[];
      }>("recipients", { addresses: ["carol@other.test"] });
      assert.deepStrictEqual(answer.recipients[0].email, ["carol@other.test"]);
      // Sent anyway: refused for that recipient, nothing queued.
      const before = (await postfix.maildir("carol@other.test")).length;
      const sent = await bob.call<
        { recipients: { address: string; status: string; error: number }[] }
      >("send", {
        to: ["carol@other.test"],
        subject: "",
        body: crypto.getRandomValues(new Uint8Array(64)),
        encrypted: true,
      });
      assert.deepStrictEqual(sent.recipients[0].status, "failed");
      assert.deepStrictEqual(
        sent.recipients[0].error,
        ErrorCode.EMAIL_NOT_ENCRYPTED,
      );
      await new Promise((r) => setTimeout(r, 1500));
      assert.deepStrictEqual(
        (await postfix.maildir("carol@other.test")).length,
        before,
      );
    });
    await t.step(
      "the CLI says before sending who reads it unencrypted",
      async () => {
        const node = world.nodes[0];
        const admin = {
          AMTP_DATA: `${node.dir}/data`,
          AMTP_CLI_STATE: `${world.root}/cli.json`,
        };
        const user = { AMTP_CLI_STATE: `${world.root}/cli-zed.json` };
        const key = `${world.root}/zed`;
        assert.deepStrictEqual(
          (await runCli(["keygen", "--out", key], user)).code,
          0,
        );
        const added = await runCli(
          ["admin", "add-user", "zed@example.test", "--key", `${key}.pub`],
          admin,
        );
        assert.deepStrictEqual(added.code, 0, added.stdout + added.stderr);
        const login = await runCli([
          "login",
          "--user",
          "zed@example.test",
          "--key",
          `${key}.key`,
          "--server",
          `127.0.0.1:${node.port}`,
          "--cert-hash",
          await certificateHash(node.certPem),
        ], user);
        assert.deepStrictEqual(login.code, 0, login.stderr);
        const send = (...more: string[]) =>
          runCli([
            "send",
            "--to",
            "carol@other.test",
            "--subject",
            "from the CLI",
            "--body",
            "b",
            ...more,
          ], user);
        const refused = await send("--encrypt");
        assert.notDeepStrictEqual(refused.code, 0);
        assert.match(
          refused.stderr,
          /carol@other\.test is reached by ordinary email: it reads the message unencrypted/,
        );
        const plain = await send();
        assert.deepStrictEqual(plain.code, 0, plain.stderr);
        assert.match(
          plain.stderr,
          /NOT ENCRYPTED: carol@other\.test is reached by ordinary email/,
        );
      },
    );
  } finally {
    // SMTP_TEST_LOGS=file keeps the server's and Postfix's logs.
    const logs = Deno.env.get("SMTP_TEST_LOGS");
    if (logs) {
      await Deno.writeTextFile(
        logs,
        (world.nodes[0].server?.stderr() ?? "") + "\n" +
          (world.nodes[0].server?.stdout() ?? "") + "\n" + await postfix.log(),
      );
    }
    await mail.close();
  }
});
