/**
 * Attacks of a peer server on local mail (issue 12, finding 1), on real
 * server processes with dnsmasq and a test CA: alpha.test is the victim,
 * evil.test a real server whose operator also speaks with its published key
 * from this test (crafted `s2s_deliver`s). A peer may only ever add mail: it
 * never changes a message it did not create, and idempotency is keyed by
 * (origin, its id). Also the two features built on global ids: threads across
 * servers and a body of its own for each Bcc recipient.
 */

import assert from "node:assert/strict";
import { PeerClient } from "../core/federation/peers.ts";
import { DnsResolver } from "../core/federation/dns.ts";
import { ServerKeys } from "../core/federation/keys.ts";
import { ErrorCode, ProtocolError } from "../core/protocol/mod.ts";
import { startWorld } from "../testing/federation_world.ts";
import { waitFor } from "../testing/helpers.ts";
import { type MailSession, pushOf } from "../testing/mail.ts";

/** What `get` answers, as far as these tests look. */
interface Copy {
  id: string;
  message_id: string;
  global_id?: string;
  from: string;
  to: string[];
  bcc?: string[];
  subject: string;
  thread: string;
  in_reply_to: string | null;
  body: string | Uint8Array;
  [field: string]: unknown;
}

/** Every copy in a folder, read whole. */
async function copies(session: MailSession, folder: string): Promise<Copy[]> {
  const list = await session.call<{ messages: { id: string }[] }>("list", {
    folder,
    limit: 200,
  });
  const out: Copy[] = [];
  for (const m of list.messages) {
    out.push(await session.call<Copy>("get", { id: m.id }));
  }
  return out;
}

Deno.test("federation attacks: a peer server can only add mail, never change it", async (t) => {
  const world = await startWorld([
    ["a.example.test", "alpha.test"],
    ["e.example.test", "evil.test"],
  ]);
  const [a, e] = world.nodes;
  const resolver = new DnsResolver({ nameServer: world.dns.address });
  const evilKeys = await ServerKeys.open(`${e.dir}/data`);
  const peers: PeerClient[] = [];
  /** A session of evil.test's server with alpha's, authenticated as `domain`. */
  const evilPeer = async (domain = "evil.test") => {
    const peer = await PeerClient.connect({ host: a.host, port: a.port }, {
      dns: resolver,
      caCerts: [world.caPem],
      connectTimeoutMs: 2000,
      requestTimeoutMs: 5000,
      maxFrame: 1 << 20,
    });
    peers.push(peer);
    await peer.authenticate(evilKeys, {
      host: e.host,
      domain,
      destinations: ["alpha.test"],
    });
    return peer;
  };
  type Results = {
    recipients: { address: string; status: string; error?: number }[];
  };
  try {
    const alice = await world.mail("alice@alpha.test");
    const bob = await world.mail("bob@alpha.test");
    const carol = await world.mail("carol@alpha.test");
    const mallory = await world.mail("mallory@evil.test");

    await t.step(
      "the finding: evil.test delivers the ids it learned; Bob's copy, Alice's Sent copy and every content stay byte-identical",
      async () => {
        const sent = await alice.call<{ message_id: string; id: string }>(
          "send",
          {
            to: ["bob@alpha.test", "mallory@evil.test"],
            subject: "Payment details",
            body: "IBAN DE00 ALICE",
          },
        );
        const atBob = await pushOf(
          bob,
          "message_new",
          (d) => d.subject === "Payment details",
        );
        const atMallory = await pushOf(
          mallory,
          "message_new",
          (d) => d.subject === "Payment details",
          15_000,
        );
        const before = {
          bob: await copies(bob, "inbox"),
          aliceSent: await copies(alice, "sent"),
          aliceInbox: await copies(alice, "inbox"),
        };
        assert.equal(before.bob.length, 1);
        assert.equal(before.bob[0].body, "IBAN DE00 ALICE");
        // Everything evil.test can know about the message: its id at alpha,
        // the Sent copy's id (predictable), the global id and its own copy's id.
        const learned = String(atMallory.global_id ?? atMallory.message_id)
          .split("@")[0];
        assert.equal(learned, sent.message_id);
        const ids = [
          ...new Set([
            learned,
            sent.id,
            `${learned}@alpha.test`,
            String(atMallory.id),
            String(atBob.id),
          ]),
        ];
        const peer = await evilPeer();
        for (const [i, id] of ids.entries()) {
          const answer = await peer.call<Results>("s2s_deliver", {
            module: "messages",
            from: "mallory@evil.test",
            to: ["bob@alpha.test", "nobody@alpha.test", "alice@alpha.test"],
            id,
            payload: {
              message_id: id,
              subject: "Payment details",
              body: `IBAN DE66 MALLORY ${i}`,
              to: ["bob@alpha.test"],
              in_reply_to: `${learned}@alpha.test`,
              thread: `${learned}@alpha.test`,
              date: new Date(),
            },
          });
          const byAddress = answer.recipients.map((
            r,
          ) => [r.address, r.status, r.error]).sort();
          assert.deepEqual(byAddress, [
            ["alice@alpha.test", "delivered", undefined],
            ["bob@alpha.test", "delivered", undefined],
            ["nobody@alpha.test", "failed", ErrorCode.NOT_FOUND],
          ]);
        }
        const after = {
          bob: await copies(bob, "inbox"),
          aliceSent: await copies(alice, "sent"),
          aliceInbox: await copies(alice, "inbox"),
        };
        // What existed reads exactly as before, body bytes included.
        for (const [who, list] of Object.entries(before)) {
          for (const copy of list) {
            const now = after[who as keyof typeof after].find((c) =>
              c.id === copy.id
            );
            assert.deepEqual(now, copy, `${who} ${copy.id} changed`);
          }
        }
        // Each of evil's deliveries is a new message with an id of its own.
        for (const list of [after.bob, after.aliceInbox]) {
          const added = list.filter((c) =>
            !before.bob.some((b) => b.id === c.id) &&
            !before.aliceInbox.some((b) => b.id === c.id)
          );
          assert.equal(added.length, ids.length);
          for (const copy of added) {
            assert.equal(copy.from, "mallory@evil.test");
            assert.match(String(copy.body), /^IBAN DE66 MALLORY \d$/);
            assert.ok(!ids.includes(copy.id), `evil named copy ${copy.id}`);
            assert.ok(!ids.includes(copy.message_id));
            assert.match(String(copy.global_id), /@evil\.test$/);
          }
          assert.equal(new Set(added.map((c) => c.id)).size, ids.length);
        }
      },
    );

    await t.step(
      "a retried delivery from the origin adds exactly one copy and changes nothing, even with another body",
      async () => {
        const peer = await evilPeer();
        const deliver = (body: string, to: string[]) =>
          peer.call<Results>("s2s_deliver", {
            module: "messages",
            from: "mallory@evil.test",
            to,
            id: "evil-message-1",
            payload: { subject: "Once", body, date: new Date() },
          });
        const first = await deliver("the first body", ["bob@alpha.test"]);
        assert.equal(first.recipients[0].status, "delivered");
        const pushed = await pushOf(
          bob,
          "message_new",
          (d) => d.subject === "Once",
        );
        const original = await bob.call<Copy>("get", { id: pushed.id });
        const seq = (await bob.call<{ seq: number }>("folders")).seq;
        // The same (origin, id) again: a retry, with a changed body, and with
        // a second recipient that gets the first content.
        const again = await deliver("a changed body", ["bob@alpha.test"]);
        assert.equal(again.recipients[0].status, "delivered");
        const third = await deliver("yet another body", [
          "bob@alpha.test",
          "carol@alpha.test",
        ]);
        assert.deepEqual(third.recipients.map((r) => r.status), [
          "delivered",
          "delivered",
        ]);
        assert.equal((await bob.call<{ seq: number }>("folders")).seq, seq);
        const inbox = await copies(bob, "inbox");
        const once = inbox.filter((c) => c.subject === "Once");
        assert.equal(once.length, 1);
        assert.deepEqual(once[0], original);
        const atCarol = (await copies(carol, "inbox")).filter((c) =>
          c.subject === "Once"
        );
        assert.equal(atCarol.length, 1);
        assert.equal(atCarol[0].body, "the first body");
        assert.equal(atCarol[0].id, original.id);
        assert.equal(original.global_id, "evil-message-1@evil.test");
      },
    );

    await t.step(
      "a peer that authenticates for a domain hosted here is refused (501)",
      async () => {
        // alpha also hosts shared.test, whose DNS (wrongly, or by an attacker
        // holding it) lists evil's server: evil passes s2s_auth for it.
        const admin = await world.connect(a);
        await admin.call("admin_add_domain", {
          admin_token: a.adminToken,
          domain: "shared.test",
        });
        admin.close();
        await world.publish({
          txt: [["shared.test", `amtp-servers=${e.host}:${e.port}`]],
        });
        const inboxBefore = await copies(bob, "inbox");
        // Refused at authentication already (and s2s_deliver refuses it
        // too, for a domain added here after a session authenticated).
        await assert.rejects(
          evilPeer("shared.test"),
          (error: unknown) => {
            assert.ok(error instanceof ProtocolError, String(error));
            assert.equal(error.code, ErrorCode.S2S_NOT_DELEGATED);
            return true;
          },
        );
        assert.deepEqual(await copies(bob, "inbox"), inboxBefore);
      },
    );

    await t.step(
      "a reply across servers threads on both sides, by global ids",
      async () => {
        const question = await alice.call<{ message_id: string; id: string }>(
          "send",
          { to: ["mallory@evil.test"], subject: "Question", body: "Lunch?" },
        );
        const got = await pushOf(
          mallory,
          "message_new",
          (d) => d.subject === "Question",
          15_000,
        );
        assert.equal(got.global_id, `${question.message_id}@alpha.test`);
        const reply = await mallory.call<{ message_id: string; id: string }>(
          "send",
          {
            to: ["alice@alpha.test"],
            subject: "Re: Question",
            body: "Yes",
            in_reply_to: got.id,
          },
        );
        const atAlice = await pushOf(
          alice,
          "message_new",
          (d) => d.subject === "Re: Question",
          15_000,
        );
        const replyCopy = await alice.call<Copy>("get", { id: atAlice.id });
        assert.equal(replyCopy.global_id, `${reply.message_id}@evil.test`);
        assert.equal(replyCopy.in_reply_to, question.message_id);
        // Alice answers the answer: three messages, one thread, both sides.
        await alice.call("send", {
          to: ["mallory@evil.test"],
          subject: "Re: Re: Question",
          body: "Noon",
          in_reply_to: atAlice.id,
        });
        const last = await pushOf(
          mallory,
          "message_new",
          (d) => d.subject === "Re: Re: Question",
          15_000,
        );
        const lastCopy = await mallory.call<Copy>("get", { id: last.id });
        assert.equal(lastCopy.in_reply_to, reply.message_id);
        const subjects = ["Question", "Re: Question", "Re: Re: Question"];
        for (
          const [session, id] of [
            [alice, question.id],
            [mallory, last.id as string],
          ] as const
        ) {
          const thread = await session.call<
            { thread: string; messages: { subject: string }[] }
          >("thread", { id });
          assert.deepEqual(thread.messages.map((m) => m.subject), subjects);
          assert.equal(thread.thread, `${question.message_id}@alpha.test`);
        }
      },
    );

    await t.step(
      "Bcc bodies: each Bcc recipient, local and remote, gets its own body; the To copy shows no bcc",
      async () => {
        const bytes = (text: string) => new TextEncoder().encode(text);
        const main = bytes("envelope for bob and alice");
        const forCarol = bytes("envelope for carol only");
        const forMallory = bytes("envelope for mallory only");
        const refused = await alice.request("send", {
          to: ["bob@alpha.test"],
          bcc: ["carol@alpha.test"],
          body: "plain",
          bcc_bodies: [forCarol],
        });
        assert.equal(refused.error, ErrorCode.INVALID_PARAMETER);
        const miscounted = await alice.request("send", {
          to: ["bob@alpha.test"],
          bcc: ["carol@alpha.test", "mallory@evil.test"],
          body: main,
          encrypted: true,
          bcc_bodies: [forCarol],
        });
        assert.equal(miscounted.error, ErrorCode.INVALID_PARAMETER);
        const sent = await alice.call<
          { id: string; message_id: string; recipients: { status: string }[] }
        >("send", {
          to: ["bob@alpha.test"],
          bcc: ["carol@alpha.test", "mallory@evil.test"],
          subject: "",
          body: main,
          encrypted: true,
          bcc_bodies: [forCarol, forMallory],
          client_id: "bcc-1",
        });
        assert.deepEqual(sent.recipients.map((r) => r.status), [
          "delivered",
          "delivered",
          "queued",
        ]);
        const match = (d: Record<string, unknown>) =>
          String(d.thread).startsWith(sent.message_id) &&
          d.encrypted === true;
        const readOn = async (session: MailSession, timeout = 5000) =>
          await session.call<Copy>("get", {
            id: (await pushOf(session, "message_new", match, timeout)).id,
          });
        const atBob = await readOn(bob);
        const atCarol = await readOn(carol);
        const atMallory = await readOn(mallory, 15_000);
        assert.deepEqual(atBob.body, main);
        assert.deepEqual(atCarol.body, forCarol);
        assert.deepEqual(atMallory.body, forMallory);
        // No copy names a Bcc recipient other than its own reader.
        for (
          const [copy, others] of [
            [atBob, ["carol@", "mallory@"]],
            [atCarol, ["mallory@"]],
            [atMallory, ["carol@"]],
          ] as const
        ) {
          assert.deepEqual(copy.bcc, []);
          assert.deepEqual(copy.to, ["bob@alpha.test"]);
          const text = JSON.stringify(copy);
          for (const name of others) {
            assert.ok(!text.includes(name), `${copy.id} names ${name}`);
          }
        }
        assert.notEqual(atCarol.id, atBob.id);
        assert.notEqual(atCarol.global_id, atBob.global_id);
        assert.notEqual(atMallory.global_id, atBob.global_id);
        const own = await alice.call<Copy>("get", { id: sent.id });
        assert.deepEqual(own.body, main);
        assert.deepEqual(own.bcc, ["carol@alpha.test", "mallory@evil.test"]);
        // A retry of the same send (same client id) adds nothing anywhere.
        await alice.call("send", {
          to: ["bob@alpha.test"],
          bcc: ["carol@alpha.test", "mallory@evil.test"],
          subject: "",
          body: main,
          encrypted: true,
          bcc_bodies: [forCarol, forMallory],
          client_id: "bcc-1",
        });
        await waitFor(
          async () => (await world.connect(a).then(async (c) => {
            const q = await c.call<{ items: unknown[] }>(
              "admin_get_queue",
              { admin_token: a.adminToken },
            );
            c.close();
            return q.items.length === 0;
          })),
          15_000,
          "an empty queue",
        );
        for (const session of [carol, mallory]) {
          const encrypted = (await copies(session, "inbox")).filter((c) =>
            c.thread.startsWith(sent.message_id) && c.body instanceof Uint8Array
          );
          assert.equal(encrypted.length, 1, session.address);
        }
      },
    );
  } finally {
    if (Deno.env.get("AMTP_TEST_DEBUG")) {
      for (const node of world.nodes) {
        console.error(`--- ${node.host}\n${node.server?.stderr()}`);
      }
    }
    for (const peer of peers) peer.close();
    await world.close();
  }
});
