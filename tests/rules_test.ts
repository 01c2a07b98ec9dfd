/**
 * The rules module end to end, over real sessions of real servers: filing,
 * flags, rejection, forwarding (local, and to another server), vacation
 * replies (once per sender; none to a bounce, a list or a no-reply sender),
 * the dry run, and the limits of `rules_set`.
 */

import assert from "node:assert/strict";
import MailComposer from "nodemailer/lib/mail-composer/index.js";
import type { Buffer } from "node:buffer";
import { ErrorCode } from "../core/protocol/mod.ts";
import { startWorld } from "../testing/federation_world.ts";
import { waitFor } from "../testing/helpers.ts";
import { type MailSession, mailWorld } from "../testing/mail.ts";
import { startEmailWorld } from "../testing/email_world.ts";
import { postfixAvailable } from "../testing/postfix.ts";
import { dataOf, SmtpConversation } from "../testing/smtp_client.ts";

interface Summary {
  id: string;
  from: string;
  subject: string;
  folder: string;
  seen: boolean;
  flagged: boolean;
}

/** A rules command of a session's user. */
async function rules(
  s: MailSession,
  command: string,
  params: Record<string, unknown> = {},
) {
  return await s.client.request(command, {
    module: "rules",
    user_token: s.token,
    ...params,
  });
}

async function setRules(s: MailSession, list: unknown[]): Promise<void> {
  const r = await rules(s, "rules_set", { rules: list });
  assert.equal(r.error, 0, r.message);
}

async function folder(s: MailSession, name = "inbox"): Promise<Summary[]> {
  return (await s.call<{ messages: Summary[] }>("list", { folder: name }))
    .messages;
}

async function send(
  s: MailSession,
  to: string[],
  subject: string,
  body = "hello",
) {
  return await s.call<{
    recipients: {
      address: string;
      status: string;
      error?: number;
      message?: string;
    }[];
  }>("send", { to, subject, body });
}

Deno.test("rules: filing with flags, rejection with a reason, the dry run, and rules_set's checks", async () => {
  const w = await mailWorld();
  try {
    const alice = await w.session("alice@example.org");
    const bob = await w.session("bob@example.org");
    await setRules(bob, [
      {
        name: "bills",
        conditions: [{ field: "subject", op: "contains", value: "Invoice" }],
        actions: [{ type: "fileinto", folder: "bills" }, { type: "flag" }, {
          type: "read",
        }],
      },
      {
        name: "no ads",
        conditions: [
          { field: "from", op: "is", value: "alice@example.org" },
          { field: "subject", op: "matches", value: "*buy*now*" },
        ],
        actions: [{ type: "reject", reason: "Bob takes no adverts." }],
      },
    ]);
    const filed = await send(alice, ["bob@example.org"], "Invoice 42");
    assert.equal(filed.recipients[0].status, "delivered");
    const bills = await folder(bob, "bills");
    assert.equal(bills.length, 1);
    assert.equal(bills[0].subject, "Invoice 42");
    assert.equal(bills[0].flagged, true);
    assert.equal(bills[0].seen, true);
    await send(alice, ["bob@example.org"], "lunch?");
    const inbox = await folder(bob);
    assert.deepEqual(inbox.map((m) => [m.subject, m.flagged]), [[
      "lunch?",
      false,
    ]]);
    // Rejected: the sender is told why, nothing is stored.
    const refused = await send(alice, ["bob@example.org"], "BUY it NOW");
    assert.equal(refused.recipients[0].status, "failed");
    assert.equal(refused.recipients[0].error, ErrorCode.REJECTED);
    assert.equal(refused.recipients[0].message, "Bob takes no adverts.");
    assert.equal((await folder(bob)).length, 1);
    // The dry run on a stored message: which rules match, what they would do.
    const dry = await rules(bob, "rules_test", { id: inbox[0].id });
    assert.equal(dry.error, 0, dry.message);
    assert.deepEqual(dry.data, { matched: [], actions: {} });
    const proposed = await rules(bob, "rules_test", {
      id: inbox[0].id,
      rules: [{
        conditions: [{ field: "subject", op: "matches", value: "lunch?" }],
        actions: [{ type: "fileinto", folder: "food" }],
      }],
    });
    assert.deepEqual(proposed.data, {
      matched: [0],
      actions: { folder: "food" },
    });
    assert.equal((await folder(bob)).length, 1, "a dry run moves nothing");
    // Another user's message id is not found in one's own mailbox.
    const carol = await w.session("carol@example.org");
    assert.equal(
      (await rules(carol, "rules_test", { id: inbox[0].id })).error,
      ErrorCode.NOT_FOUND,
    );
    assert.deepEqual(
      ((await rules(bob, "rules_get")).data as { rules: { name: string }[] })
        .rules.map((r) => r.name),
      ["bills", "no ads"],
    );
    // rules_set checks shapes and bounds.
    const bad = await rules(bob, "rules_set", {
      rules: [{
        conditions: [{ field: "subject", op: "over" }],
        actions: [{ type: "flag" }],
      }],
    });
    assert.equal(bad.error, ErrorCode.INVALID_PARAMETER);
    assert.equal(
      (bad.data as { parameter: string }).parameter,
      "rules[0].conditions[0].op",
    );
    const many = await rules(bob, "rules_set", {
      rules: Array.from(
        { length: 101 },
        () => ({ actions: [{ type: "flag" }] }),
      ),
    });
    assert.equal(many.error, ErrorCode.LIMIT_EXCEEDED);
    const huge = await rules(bob, "rules_set", {
      rules: Array.from({ length: 20 }, () => ({
        actions: [{ type: "vacation", body: "x".repeat(4000) }],
      })),
    });
    assert.equal(huge.error, ErrorCode.LIMIT_EXCEEDED);
    // The evaluation is for the messages module only: not a client command.
    assert.equal(
      (await rules(bob, "rules_evaluate", { deliveries: [] })).error,
      ErrorCode.UNKNOWN_COMMAND,
    );
  } finally {
    await w.t.close();
  }
});

Deno.test("rules: a local forward keeps a copy, never loops back, and carries the chain", async () => {
  const w = await mailWorld();
  try {
    const alice = await w.session("alice@example.org");
    const bob = await w.session("bob@example.org");
    const carol = await w.session("carol@example.org");
    // bob forwards everything to carol, carol everything to bob and alice.
    await setRules(bob, [{
      actions: [{ type: "forward", to: ["carol@example.org"] }],
    }]);
    await setRules(carol, [{
      actions: [{
        type: "forward",
        to: ["bob@example.org", "alice@example.org"],
        keep: false,
      }],
    }]);
    await send(alice, ["bob@example.org"], "round and round");
    // bob keeps his copy and carol gets bob's forward; carol's own rule
    // would send it back to bob (who forwarded it) and to alice (its
    // sender): both are left out, and with keep false she still keeps it
    // (nothing was forwarded).
    const bobs = await folder(bob);
    assert.deepEqual(bobs.map((m) => m.from), ["alice@example.org"]);
    const carols = await folder(carol);
    assert.deepEqual(carols.map((m) => [m.from, m.subject]), [[
      "bob@example.org",
      "round and round",
    ]]);
    const forwarded = await carol.call<{ forwarded: string[]; body: string }>(
      "get",
      { id: carols[0].id },
    );
    assert.deepEqual(forwarded.forwarded, [
      "alice@example.org",
      "bob@example.org",
    ]);
    assert.match(
      forwarded.body,
      /Forwarded by bob@example.org; from alice@example.org/,
    );
    assert.equal((await folder(alice)).length, 0);
    // A forward without keep leaves no copy here.
    await setRules(bob, [{
      actions: [{ type: "forward", to: ["carol@example.org"], keep: false }],
    }]);
    await send(alice, ["bob@example.org"], "only for carol");
    assert.equal((await folder(bob)).length, 1);
    assert.equal((await folder(carol)).length, 2);
  } finally {
    await w.t.close();
  }
});

Deno.test("rules: a vacation reply goes once per sender, never to a no-reply sender or an automatic message", async () => {
  const w = await mailWorld();
  try {
    const alice = await w.session("alice@example.org");
    const bob = await w.session("bob@example.org");
    const noreply = await w.session("noreply@example.org");
    const carol = await w.session("carol@example.org");
    await setRules(bob, [{
      actions: [{ type: "vacation", body: "Away until Monday.", days: 7 }],
    }]);
    // carol answers everything automatically too: the two must not loop.
    await setRules(carol, [{
      actions: [{ type: "vacation", body: "Carol is away.", subject: "Away" }],
    }]);
    await send(alice, ["bob@example.org"], "first");
    await send(alice, ["bob@example.org"], "second");
    await send(noreply, ["bob@example.org"], "your receipt");
    await send(carol, ["bob@example.org"], "from carol");
    await waitFor(
      async () =>
        (await folder(alice)).length >= 1 &&
        (await folder(carol)).length >= 1,
      5000,
      "vacation replies",
    );
    // Give a wrong second reply time to arrive before counting.
    await new Promise((r) => setTimeout(r, 500));
    const replies = await folder(alice);
    assert.deepEqual(replies.map((m) => [m.from, m.subject]), [[
      "bob@example.org",
      "Re: first",
    ]]);
    const reply = await alice.call<{ auto_submitted: string; body: string }>(
      "get",
      { id: replies[0].id },
    );
    assert.equal(reply.auto_submitted, "auto-replied");
    assert.equal(reply.body, "Away until Monday.");
    assert.equal((await folder(noreply)).length, 0);
    // carol got bob's reply; her own vacation rule does not answer it.
    assert.deepEqual((await folder(carol)).map((m) => m.subject), [
      "Re: from carol",
    ]);
    assert.equal(
      (await folder(bob)).filter((m) => m.subject === "Away").length,
      0,
    );
  } finally {
    await w.t.close();
  }
});

Deno.test("rules: a forward to another server arrives there from the forwarder, with the chain", async () => {
  const world = await startWorld([
    ["a.example.test", "alpha.test"],
    ["b.example.test", "beta.test"],
    ["c.example.test", "gamma.test"],
  ]);
  try {
    await world.publish();
    for (
      const address of [
        "alice@gamma.test",
        "bob@alpha.test",
        "dave@beta.test",
      ]
    ) await world.addUser(address);
    const alice = await world.mail("alice@gamma.test");
    const bob = await world.mail("bob@alpha.test");
    const dave = await world.mail("dave@beta.test");
    // bob@alpha forwards to dave@beta; dave forwards back to bob (a loop
    // across servers: left out, bob forwarded it already).
    await setRules(bob, [{
      actions: [{ type: "forward", to: ["dave@beta.test"] }],
    }]);
    await setRules(dave, [{
      actions: [{ type: "forward", to: ["bob@alpha.test"] }],
    }]);
    const sent = await send(alice, ["bob@alpha.test"], "across");
    assert.equal(sent.recipients[0].status, "queued");
    let got: Summary[] = [];
    await waitFor(
      async () => {
        got = await folder(dave);
        return got.length > 0;
      },
      20_000,
      "the forward at beta",
    );
    assert.deepEqual(got.map((m) => [m.from, m.subject]), [[
      "bob@alpha.test",
      "across",
    ]]);
    const copy = await dave.call<{ forwarded: string[] }>("get", {
      id: got[0].id,
    });
    assert.deepEqual(copy.forwarded, ["alice@gamma.test", "bob@alpha.test"]);
    await new Promise((r) => setTimeout(r, 1000));
    assert.deepEqual((await folder(bob)).map((m) => m.from), [
      "alice@gamma.test",
    ]);
  } finally {
    await world.close();
  }
});

async function compose(mail: Record<string, unknown>): Promise<Uint8Array> {
  const composer = new MailComposer(mail);
  const buffer: Buffer = await new Promise((resolve, reject) =>
    composer.compile().build((error: Error | null, message: Buffer) =>
      error ? reject(error) : resolve(message)
    )
  );
  return new Uint8Array(buffer);
}

/** Hand a message to the SMTP gateway; its final reply code. */
async function smtpSend(
  port: number,
  mailFrom: string,
  to: string,
  raw: Uint8Array,
): Promise<{ code: number; text: string }> {
  const smtp = await SmtpConversation.open(port);
  try {
    await smtp.reply();
    await smtp.command("EHLO client.test");
    await smtp.command(`MAIL FROM:<${mailFrom}>`);
    await smtp.command(`RCPT TO:<${to}>`);
    assert.equal((await smtp.command("DATA")).code, 354);
    await smtp.write(dataOf(raw));
    const reply = await smtp.reply();
    return reply;
  } finally {
    smtp.close();
  }
}

Deno.test({
  name:
    "rules: email by the gateway — authentication results and headers in conditions, rejection at SMTP, vacation never to a bounce or a list",
  ignore: !postfixAvailable(),
  async fn() {
    const email = await startEmailWorld();
    try {
      const { world, port } = email;
      await world.addUser("bob@example.test");
      const bob = await world.mail("bob@example.test");
      await setRules(bob, [
        {
          name: "verified",
          conditions: [{ field: "spf", op: "is", value: "pass" }, {
            field: "header",
            header: "x-project",
            op: "is",
            value: "apollo",
          }],
          actions: [{ type: "fileinto", folder: "apollo" }],
        },
        {
          conditions: [{ field: "subject", op: "contains", value: "casino" }],
          actions: [{ type: "reject", reason: "No gambling here" }],
          stop: true,
        },
        { actions: [{ type: "vacation", body: "Away.", days: 3 }] },
      ]);
      const mail = (from: string, subject: string, headers = {}) =>
        compose({
          from,
          to: "bob@example.test",
          subject,
          text: "hi",
          headers,
        });
      // SPF passes for other.test from 127.0.0.1; the header matches.
      assert.equal(
        (await smtpSend(
          port,
          "carol@other.test",
          "bob@example.test",
          await mail("carol@other.test", "launch", { "X-Project": "Apollo" }),
        )).code,
        250,
      );
      const rejected = await smtpSend(
        port,
        "carol@other.test",
        "bob@example.test",
        await mail("carol@other.test", "casino night"),
      );
      assert.equal(rejected.code, 550);
      assert.match(rejected.text, /5\.7\.1 No gambling here/);
      // A second message from carol, a bounce, a list message.
      for (
        const [from, envelope, subject, headers] of [
          ["carol@other.test", "carol@other.test", "again", {}],
          ["mailer-daemon@other.test", "", "Undelivered", {}],
          ["news@other.test", "news@other.test", "Weekly", {
            "List-Id": "<weekly.other.test>",
          }],
        ] as [string, string, string, Record<string, string>][]
      ) {
        assert.equal(
          (await smtpSend(
            port,
            envelope,
            "bob@example.test",
            await mail(from, subject, headers),
          )).code,
          250,
        );
      }
      const apollo = await folder(bob, "apollo");
      assert.deepEqual(apollo.map((m) => m.subject), ["launch"]);
      // One vacation reply, to carol (queued for email): bob's Sent shows it.
      let sent: Summary[] = [];
      await waitFor(
        async () => {
          sent = await folder(bob, "sent");
          return sent.length > 0;
        },
        10_000,
        "a vacation reply",
      );
      await new Promise((r) => setTimeout(r, 1000));
      sent = await folder(bob, "sent");
      assert.deepEqual(sent.map((m) => m.subject), ["Re: launch"]);
      const reply = await bob.call<{ to: string[] }>("get", { id: sent[0].id });
      assert.deepEqual(reply.to, ["carol@other.test"]);
    } finally {
      await email.close();
    }
  },
});
