/**
 * Mailboxes in and out in mail's own formats (`deno task admin import` and
 * `export`, run as processes beside a running server): folders, flags,
 * dates, threads and attachments kept; importing again adds nothing; an
 * export imported into another mailbox gives the same mailbox.
 */

import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import MailComposer from "nodemailer/lib/mail-composer/index.js";
import { startWorld, type World } from "../testing/federation_world.ts";
import type { MailSession } from "../testing/mail.ts";
import { cleanEnv, taskArgs } from "../testing/process.ts";
import { dovecotAvailable, startDovecot } from "../testing/dovecot.ts";
import { ImapFlow } from "imapflow";

async function admin(
  world: World,
  args: string[],
): Promise<{ code: number; out: string }> {
  const node = world.nodes[0];
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...taskArgs("admin"), ...args],
    cwd: node.dir,
    env: cleanEnv({ AMTP_DATA: `${node.dir}/data` }),
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout) +
    new TextDecoder().decode(output.stderr);
  return { code: output.code, out: text };
}

async function compose(mail: Record<string, unknown>): Promise<Uint8Array> {
  const composer = new MailComposer(mail);
  const buffer: Buffer = await new Promise((resolve, reject) =>
    composer.compile().build((error: Error | null, message: Buffer) =>
      error ? reject(error) : resolve(message)
    )
  );
  return new Uint8Array(buffer);
}

interface Copy {
  id: string;
  global_id: string;
  subject: string;
  seen: boolean;
  flagged: boolean;
  thread: string;
  date: Date;
  attachments: number;
}

/** A mailbox as a comparable picture: per folder, each message's id, subject, flags, date, thread. */
async function picture(s: MailSession): Promise<Record<string, string[]>> {
  const { folders } = await s.call<{ folders: { name: string }[] }>(
    "folders",
  );
  const out: Record<string, string[]> = {};
  for (const { name } of folders) {
    const { messages } = await s.call<{ messages: Copy[] }>("list", {
      folder: name,
      limit: 200,
    });
    if (messages.length === 0) continue;
    out[name] = messages.map((m) =>
      [
        m.global_id,
        m.subject,
        m.seen ? "seen" : "",
        m.flagged ? "flagged" : "",
        new Date(m.date).toISOString().slice(0, 19),
        m.thread,
        m.attachments,
      ].join(" | ")
    ).sort();
  }
  return out;
}

async function files(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory) {
      out.push(
        ...(await files(`${dir}/${e.name}`)).map((f) => `${e.name}/${f}`),
      );
    } else out.push(e.name);
  }
  return out.sort();
}

Deno.test({
  name:
    "mail import and export: mbox, Maildir, .eml; idempotent; an export imported elsewhere is the same mailbox",
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const world = await startWorld([["mx.example.test", "example.test"]]);
  try {
    const bob = await world.mail("bob@example.test");
    await world.addUser("amy@example.test");
    // An AMTP conversation: bob writes to amy (his copy in Sent).
    await bob.call("send", {
      to: ["amy@example.test"],
      subject: "lunch?",
      body: "at noon\n",
    });

    // A Maildir from another server: INBOX (one seen and flagged, one
    // answering it), and Projects with an attachment.
    const source = await Deno.makeTempDir({ prefix: "amtp-maildir-" });
    const picture1 = crypto.getRandomValues(new Uint8Array(30_000));
    const eml = await Deno.readFile(
      new URL("./fixtures/email/thunderbird.eml", import.meta.url),
    );
    const answer = await compose({
      from: "carol@other.test",
      to: "bob@example.test",
      subject: "Re: Café on Saturday?",
      messageId: "<a2@other.test>",
      inReplyTo: "<4f1c2a9e-7d3b-4c55-9a1e-2b6f0c8d1e77@other.test>",
      references: ["<4f1c2a9e-7d3b-4c55-9a1e-2b6f0c8d1e77@other.test>"],
      date: new Date("2026-11-27T19:00:00Z"),
      text: "or eleven\n",
    });
    const report = await compose({
      from: "dana@other.test",
      to: "bob@example.test",
      subject: "the plan",
      messageId: "<p1@other.test>",
      date: new Date("2026-10-01T08:00:00Z"),
      text: "attached\n",
      attachments: [{ filename: "plan.bin", content: Buffer.from(picture1) }],
    });
    for (const sub of ["INBOX/cur", "INBOX/new", ".Projects/cur"]) {
      await Deno.mkdir(`${source}/${sub}`, { recursive: true });
    }
    await Deno.writeFile(`${source}/INBOX/cur/1.a.host:2,FS`, eml);
    await Deno.writeFile(`${source}/INBOX/new/2.b.host`, answer);
    await Deno.writeFile(`${source}/.Projects/cur/3.c.host:2,RS`, report);

    const imported = await admin(world, [
      "import",
      "bob@example.test",
      source,
    ]);
    assert.deepStrictEqual(imported.code, 0, imported.out);
    assert.match(imported.out, /imported 3 messages/);
    const before = await picture(bob);
    assert.deepStrictEqual(Object.keys(before).sort(), [
      "inbox",
      "projects",
      "sent",
    ]);
    const inbox = before.inbox.join("\n");
    assert.match(
      inbox,
      /4f1c2a9e-7d3b-4c55-9a1e-2b6f0c8d1e77@other\.test \| Café on Saturday\? \| seen \| flagged \| 2026-11-27T17:02:11/,
    );
    // The answer threads under the message it answers; unseen (new/).
    assert.match(
      inbox,
      /a2@other\.test \| Re: Café on Saturday\? \| {2}\| {2}\| .* \| 4f1c2a9e/,
    );
    assert.match(before.projects[0], /p1@other\.test \| the plan \| seen/);
    // The attachment, byte for byte.
    const { messages } = await bob.call<{ messages: Copy[] }>("list", {
      folder: "projects",
    });
    const plan = await bob.call<{ attachments: { id: string }[] }>("get", {
      id: messages[0].id,
    });
    const got = await bob.call<{ data: Uint8Array }>("attachment_get", {
      id: messages[0].id,
      attachment_id: plan.attachments[0].id,
    });
    assert.deepStrictEqual(got.data, picture1);

    // Again: nothing added (an interrupted import resumes the same way).
    const again = await admin(world, ["import", "bob@example.test", source]);
    assert.match(again.out, /imported 0 messages .*\(3 already there/);
    assert.deepStrictEqual(await picture(bob), before);

    for (const format of ["maildir", "mbox", "eml"]) {
      const out = `${world.root}/export-${format}`;
      const exported = await admin(world, [
        "export",
        "bob@example.test",
        "--format",
        format,
        out,
      ]);
      assert.deepStrictEqual(exported.code, 0, exported.out);
      assert.match(exported.out, /exported 4 messages/);
      const written = await files(out);
      if (format === "maildir") {
        assert.ok(
          written.some((f) => /^inbox\/cur\/\d+\.\w+\.amtp:2,FS$/.test(f)),
        );
        assert.ok(
          written.some((f) => /^projects\/cur\/\d+\.\w+\.amtp:2,RS$/.test(f)),
        );
        // A message that came as email is written as it came.
        const inboxFiles = written.filter((f) => f.startsWith("inbox/cur/"));
        const copies = await Promise.all(
          inboxFiles.map((f) => Deno.readFile(`${out}/${f}`)),
        );
        assert.ok(copies.some((c) => Buffer.from(c).equals(Buffer.from(eml))));
      } else if (format === "mbox") {
        assert.deepStrictEqual(written, [
          "inbox.mbox",
          "projects.mbox",
          "sent.mbox",
        ]);
      } else {
        assert.deepStrictEqual(
          written.filter((f) => f.startsWith("sent/")).length,
          1,
        );
      }
      // Into a mailbox of its own: the same mailbox.
      const address = `copy-${format}@example.test`;
      const copy = await world.mail(address);
      const back = await admin(world, ["import", address, out]);
      assert.deepStrictEqual(back.code, 0, back.out);
      const seen = await picture(copy);
      if (format === "eml") {
        // .eml files carry no flags: the rest is the same.
        const plain = (p: Record<string, string[]>) =>
          Object.fromEntries(
            Object.entries(p).map((
              [k, v],
            ) => [
              k,
              v.map((l) => l.replace(/\| (seen)? \| (flagged)? \|/, "|")),
            ]),
          );
        assert.deepStrictEqual(plain(seen), plain(before));
      } else {
        assert.deepStrictEqual(seen, before);
      }
    }
  } finally {
    await world.close();
  }
});

/** Per folder, each message (line ends normalised) with its Maildir flags, sorted. */
async function maildirPicture(
  root: string,
  folders: Record<string, string>,
): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const [name, path] of Object.entries(folders)) {
    const items: string[] = [];
    for (const sub of ["cur", "new"]) {
      try {
        for await (const e of Deno.readDir(`${root}/${path}/${sub}`)) {
          const text = new TextDecoder().decode(
            await Deno.readFile(`${root}/${path}/${sub}/${e.name}`),
          ).replace(/\r\n/g, "\n");
          const flags = e.name.match(/:2,([A-Z]*)$/)?.[1] ?? "";
          items.push(`${flags} ${text}`);
        }
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
    }
    out[name] = items.sort();
  }
  return out;
}

Deno.test({
  name:
    "mail import-imap: a real Dovecot account migrated (folders, flags, attachments), resumable, exported to Maildir equal to Dovecot's",
  ignore: !dovecotAvailable(),
  sanitizeOps: false,
  sanitizeResources: false,
}, async () => {
  const dovecot = await startDovecot({ carol: "secret" });
  const world = await startWorld([["mx.example.test", "example.test"]]);
  try {
    const bob = await world.mail("bob@example.test");
    // Carol's account, filled over IMAP as her mail client did.
    const imap = new ImapFlow({
      host: "127.0.0.1",
      port: dovecot.port,
      secure: false,
      auth: { user: "carol", pass: "secret" },
      logger: false,
    });
    await imap.connect();
    await imap.mailboxCreate("Projects");
    const eml = await Deno.readFile(
      new URL("./fixtures/email/thunderbird.eml", import.meta.url),
    );
    const data = crypto.getRandomValues(new Uint8Array(20_000));
    const withFile = await compose({
      from: "dana@other.test",
      to: "carol@other.test",
      subject: "the plan",
      messageId: "<p1@other.test>",
      date: new Date("2026-10-01T08:00:00Z"),
      text: "attached\n",
      attachments: [{ filename: "plan.bin", content: Buffer.from(data) }],
    });
    const sent = await compose({
      from: "carol@other.test",
      to: "bob@example.test",
      subject: "Café on Saturday?",
      messageId: "<s1@other.test>",
      date: new Date("2026-11-20T08:00:00Z"),
      text: "?\n",
    });
    await imap.append("INBOX", Buffer.from(eml), ["\\Seen", "\\Flagged"]);
    await imap.append("Projects", Buffer.from(withFile), [
      "\\Seen",
      "\\Answered",
    ]);
    await imap.append("Sent", Buffer.from(sent), ["\\Seen"]);
    await imap.append(
      "INBOX",
      Buffer.from(
        await compose({
          from: "eve@other.test",
          to: "carol@other.test",
          subject: "unread",
          messageId: "<u1@other.test>",
          text: "!\n",
        }),
      ),
      [],
    );
    await imap.logout();

    const password = `${world.root}/imap-password`;
    await Deno.writeTextFile(password, "secret\n");
    const migrate = () =>
      admin(world, [
        "import-imap",
        "bob@example.test",
        "--host",
        "127.0.0.1",
        "--port",
        String(dovecot.port),
        "--no-tls",
        "--user",
        "carol",
        "--password-file",
        password,
      ]);
    const first = await migrate();
    assert.deepStrictEqual(first.code, 0, first.out);
    assert.match(first.out, /imported 4 messages/);
    const got = await picture(bob);
    assert.deepStrictEqual(Object.keys(got).sort(), [
      "inbox",
      "projects",
      "sent",
    ]);
    assert.match(got.inbox.join("\n"), /Café on Saturday\? \| seen \| flagged/);
    assert.match(got.inbox.join("\n"), /unread \| {2}\| {2}\|/);
    assert.match(got.projects[0], /the plan \| seen \| {2}\|/);
    const { messages } = await bob.call<{ messages: Copy[] }>("list", {
      folder: "projects",
    });
    const plan = await bob.call<{ attachments: { id: string }[] }>("get", {
      id: messages[0].id,
    });
    const file = await bob.call<{ data: Uint8Array }>("attachment_get", {
      id: messages[0].id,
      attachment_id: plan.attachments[0].id,
    });
    assert.deepStrictEqual(file.data, data);

    // Interrupted or not, running it again adds nothing.
    const again = await migrate();
    assert.match(again.out, /imported 0 messages .*\(4 already there/);
    assert.deepStrictEqual(await picture(bob), got);

    // Exported to Maildir: the same messages with the same flags as Dovecot's.
    const out = `${world.root}/export`;
    const exported = await admin(world, [
      "export",
      "bob@example.test",
      "--format",
      "maildir",
      out,
    ]);
    assert.deepStrictEqual(exported.code, 0, exported.out);
    const theirs = await maildirPicture(`${dovecot.dir}/home/carol/Maildir`, {
      inbox: ".",
      projects: ".Projects",
      sent: ".Sent",
    });
    assert.deepStrictEqual(
      Object.values(theirs).map((v) => v.length),
      [2, 1, 1],
    );
    assert.deepStrictEqual(
      await maildirPicture(out, {
        inbox: "inbox",
        projects: "projects",
        sent: "sent",
      }),
      theirs,
    );
  } finally {
    await world.close();
    await dovecot.close();
  }
});
