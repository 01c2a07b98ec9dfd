/**
 * Attachments between servers, in the three-server world (real processes,
 * dnsmasq, a test CA): a 20 MiB attachment and an end-to-end encrypted one
 * reach users on two other servers byte for byte; the sending server killed
 * mid-transfer finishes once after its restart without resending what
 * arrived; and the receiving side of `s2s_blob` refuses what a hostile peer
 * tries (altered bytes, oversized claims, wrong offsets, strangers, quota).
 */

import assert from "node:assert/strict";
import {
  decryptAttachment,
  decryptMessage,
  encryptAttachment,
  encryptMessage,
  headerMismatches,
  MemoryTrustStore,
} from "../client/e2e.ts";
import { initDevice, planEncryption } from "../client/e2e_cli.ts";
import { DnsResolver } from "../core/federation/dns.ts";
import { ServerKeys } from "../core/federation/keys.ts";
import { PeerClient } from "../core/federation/peers.ts";
import { ErrorCode, ProtocolError } from "../core/protocol/mod.ts";
import { type Node, startWorld } from "../testing/federation_world.ts";
import { waitFor } from "../testing/helpers.ts";
import { type MailSession, pushOf, uploadAttachment } from "../testing/mail.ts";
import { sha256Hex } from "../shared/pem.ts";

const CHUNK = 256 * 1024;

/** Random bytes (getRandomValues fills at most 64 KiB at a time). */
function randomBytes(size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let at = 0; at < size; at += 65536) {
    crypto.getRandomValues(out.subarray(at, Math.min(size, at + 65536)));
  }
  return out;
}

async function upload(
  s: MailSession,
  name: string,
  data: Uint8Array,
): Promise<{ id: string; sha256: string }> {
  return {
    id: await uploadAttachment(s, name, data),
    sha256: await sha256Hex(data),
  };
}

async function download(
  s: MailSession,
  id: string,
  attachmentId: string,
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let chunks = 1;
  for (let index = 0; index < chunks; index++) {
    const got = await s.call<{ chunks: number; data: Uint8Array }>(
      "attachment_get",
      { id, attachment_id: attachmentId, index },
    );
    chunks = got.chunks;
    parts.push(got.data);
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.byteLength, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.byteLength;
  }
  return out;
}

/** What a receiving server logged of `s2s_blob` for one blob. */
function blobLog(node: Node, sha256: string) {
  const lines = (node.server?.stderr() ?? "").split("\n").filter((l) =>
    l.includes(sha256)
  );
  const field = (line: string, name: string) =>
    Number(line.match(new RegExp(`\\b${name}=(\\d+)`))?.[1] ?? NaN);
  return {
    offers: lines.filter((l) => l.includes("s2s_blob_offer")).map((l) =>
      field(l, "offset")
    ),
    stored: lines.filter((l) => l.includes("s2s_blob_stored")).map((l) => ({
      at: field(l, "at"),
      bytes: field(l, "bytes"),
    })),
  };
}

Deno.test("federation attachments: 20 MiB and end-to-end encrypted across three servers, a sender killed mid-transfer, hostile peers refused", async (t) => {
  const world = await startWorld([
    ["a.example.test", "alpha.test"],
    ["b.example.test", "beta.test"],
    ["c.example.test", "gamma.test"],
  ], {
    AMTP_FEDERATION_LIFETIME: "300",
    AMTP_FEDERATION_TIMEOUT: "10",
  });
  const [a, b, c] = world.nodes;
  try {
    for (
      const address of ["alice@alpha.test", "bob@beta.test", "carl@gamma.test"]
    ) await world.addUser(address);

    await t.step(
      "20 MiB to two other servers: the sender SIGKILLed mid-transfer resumes after restart; one copy each, byte for byte, no byte sent twice",
      async () => {
        const alice = await world.mail("alice@alpha.test");
        const big = randomBytes(20 * 1024 * 1024);
        const file = await upload(alice, "big.bin", big);
        const sent = await alice.call<
          { global_id: string; recipients: { status: string }[] }
        >("send", {
          to: ["bob@beta.test", "carl@gamma.test"],
          subject: "Twenty MiB",
          body: "see attached",
          attachments: [file.id],
        });
        assert.deepEqual(sent.recipients.map((r) => r.status), [
          "queued",
          "queued",
        ]);
        // Kill the sender once a receiver holds part of the blob.
        await waitFor(
          () => blobLog(b, file.sha256).stored.length >= 2,
          60_000,
          "the first chunks at beta",
        );
        await a.server!.stop("SIGKILL");
        const before = blobLog(b, file.sha256).stored.length;
        assert.ok(
          before * CHUNK < big.byteLength,
          `the transfer was over before the kill (${before} chunks)`,
        );
        await world.start(a);
        const bob = await world.mail("bob@beta.test");
        const carl = await world.mail("carl@gamma.test");
        for (const [s, node] of [[bob, b], [carl, c]] as const) {
          const push = await pushOf(
            s,
            "message_new",
            (d) => d.global_id === sent.global_id,
            120_000,
          );
          const got = await s.call<
            { attachments: { id: string; size: number; sha256: string }[] }
          >("get", { id: push.id });
          assert.equal(got.attachments.length, 1);
          assert.equal(got.attachments[0].id, file.id);
          assert.equal(got.attachments[0].sha256, file.sha256);
          const bytes = await download(s, String(push.id), file.id);
          assert.equal(bytes.byteLength, big.byteLength);
          assert.ok(
            bytes.every((x, i) => x === big[i]),
            `bytes at ${node.host}`,
          );
          // Exactly one copy in the inbox.
          const inbox = await s.call<{ messages: { global_id: string }[] }>(
            "list",
            { folder: "inbox" },
          );
          assert.equal(
            inbox.messages.filter((m) => m.global_id === sent.global_id).length,
            1,
          );
          // Each byte arrived once: the chunks stored start at distinct
          // offsets and add up to the size.
          const log = blobLog(node, file.sha256);
          const starts = log.stored.map((s) => s.at);
          assert.equal(new Set(starts).size, starts.length, `${starts}`);
          assert.equal(
            log.stored.reduce((n, s) => n + s.bytes, 0),
            big.byteLength,
          );
        }
        // beta held part of it at the kill: the restarted sender went on
        // from there (an offer answered with a nonzero offset).
        assert.ok(
          blobLog(b, file.sha256).offers.some((o) =>
            o > 0 && o < big.byteLength
          ),
          JSON.stringify(blobLog(b, file.sha256).offers),
        );
        const admin = await world.connect(a);
        await waitFor(
          async () =>
            (await admin.call<{ items: unknown[] }>("admin_get_queue", {
              admin_token: a.adminToken,
            })).items.length === 0,
          30_000,
          "the queue empties",
        );
        admin.close();
      },
    );

    await t.step(
      "an end-to-end encrypted attachment reaches two other servers, decrypts, and the signed attachment list matches",
      async () => {
        const alice = await world.mail("alice@alpha.test");
        const bob = await world.mail("bob@beta.test");
        const carl = await world.mail("carl@gamma.test");
        const device = async (s: MailSession, name: string) => {
          const dir = `${world.root}/device-${name}`;
          await Deno.mkdir(dir, { recursive: true });
          return await initDevice(s.client, {
            token: s.token,
            address: s.address,
            label: name,
            stateFile: `${dir}/state.json`,
          });
        };
        const aliceDevice = await device(alice, "alice");
        const bobDevice = await device(bob, "bob");
        const carlDevice = await device(carl, "carl");
        const plan = await planEncryption(alice.client, {
          token: alice.token,
          sender: alice.address,
          file: aliceDevice.file,
          to: ["bob@beta.test", "carl@gamma.test"],
          bcc: [],
          trust: new MemoryTrustStore(),
        });
        assert.ok(plan.encrypt, JSON.stringify(plan));
        const plain = randomBytes(CHUNK + 12345);
        const contentKey = crypto.getRandomValues(new Uint8Array(32));
        const sealed = await encryptAttachment(contentKey, plain);
        const stored = await upload(alice, "sealed.bin", sealed.data);
        const envelope = await encryptMessage({
          subject: "Secret file",
          body: "the plans",
          format: "text",
          attachments: [{
            attachment_id: stored.id,
            name: "plans.pdf",
            type: "application/pdf",
            nonce: sealed.nonce,
            sha256: await sha256Hex(plain),
            stored_sha256: stored.sha256,
          }],
        }, {
          sender: alice.address,
          device: aliceDevice.file.device,
          recipients: plan.targets,
          contentKey,
          headers: {
            to: ["bob@beta.test", "carl@gamma.test"],
            cc: [],
            date: new Date(),
            message_id: "x@alpha.test",
            in_reply_to: null,
          },
        });
        const sent = await alice.call<{ global_id: string }>("send", {
          to: ["bob@beta.test", "carl@gamma.test"],
          subject: "",
          body: envelope,
          encrypted: true,
          attachments: [stored.id],
        });
        for (
          const [s, d] of [[bob, bobDevice], [carl, carlDevice]] as const
        ) {
          const push = await pushOf(
            s,
            "message_new",
            (x) => x.global_id === sent.global_id,
            60_000,
          );
          const got = await s.call<{
            body: Uint8Array;
            from: string;
            to: string[];
            cc: string[];
            date: Date;
            attachments: { id: string; sha256: string }[];
          }>("get", { id: push.id });
          const opened = await decryptMessage(got.body, {
            address: s.address,
            device: d.file.device,
          });
          const mismatches = headerMismatches(opened, {
            from: got.from,
            to: got.to,
            cc: got.cc,
            date: got.date,
            attachments: got.attachments,
          });
          // The message id is the test's placeholder; everything else matches.
          assert.deepEqual(
            mismatches.filter((m) => !/delivered it as/.test(m)),
            [],
          );
          const inner = opened.content.attachments![0];
          const bytes = await download(s, String(push.id), stored.id);
          const clear = await decryptAttachment(
            opened.contentKey,
            inner.nonce,
            bytes,
          );
          assert.equal(clear.byteLength, plain.byteLength);
          assert.ok(clear.every((x, i) => x === plain[i]));
        }
      },
    );

    const resolver = new DnsResolver({ nameServer: world.dns.address });
    const peerOptions = {
      dns: resolver,
      caCerts: [world.caPem],
      connectTimeoutMs: 2000,
      requestTimeoutMs: 10_000,
      maxFrame: 1 << 20,
    };
    const keysA = await ServerKeys.open(`${a.dir}/data`);
    const keysC = await ServerKeys.open(`${c.dir}/data`);
    // gamma.test's own server (its real key), turned hostile, talking to beta.
    const hostile = async () => {
      const peer = await PeerClient.connect(
        { host: b.host, port: b.port },
        peerOptions,
      );
      await peer.authenticate(keysC, {
        host: c.host,
        domain: "gamma.test",
        destinations: ["beta.test"],
      });
      return peer;
    };
    const refused = async (work: Promise<unknown>, code: number) => {
      await assert.rejects(work, (error: unknown) => {
        assert.ok(error instanceof ProtocolError, String(error));
        assert.equal(error.code, code, error.message);
        return true;
      });
    };

    await t.step(
      "a peer sending bytes that do not hash to the announced SHA-256 is refused, and a message naming them is not delivered",
      async () => {
        const peer = await hostile();
        try {
          const real = randomBytes(CHUNK + 100);
          const sha256 = await sha256Hex(real);
          const altered = real.slice();
          altered[CHUNK + 5] ^= 1;
          const common = {
            module: "messages",
            from: "carl@gamma.test",
            to: ["bob@beta.test"],
            sha256,
            size: real.byteLength,
          };
          const offer = await peer.call<{ offset: number }>("s2s_blob", {
            ...common,
            op: "offer",
          });
          assert.equal(offer.offset, 0);
          await peer.call("s2s_blob", {
            ...common,
            op: "put",
            offset: 0,
            data: altered.subarray(0, CHUNK),
          });
          await refused(
            peer.call("s2s_blob", {
              ...common,
              op: "put",
              offset: CHUNK,
              data: altered.subarray(CHUNK),
            }),
            ErrorCode.INVALID_PARAMETER,
          );
          // Discarded: the transfer starts over.
          assert.equal(
            (await peer.call<{ offset: number }>("s2s_blob", {
              ...common,
              op: "offer",
            })).offset,
            0,
          );
          const answer = await peer.call<
            { recipients: { status: string; error?: number }[] }
          >("s2s_deliver", {
            module: "messages",
            from: "carl@gamma.test",
            to: ["bob@beta.test"],
            id: "altered-1",
            payload: {
              subject: "substituted",
              body: "x",
              attachments: [{
                id: "a1",
                name: "x",
                type: "x",
                size: real.byteLength,
                sha256,
              }],
            },
          });
          assert.equal(answer.recipients[0].status, "failed");
          assert.equal(answer.recipients[0].error, ErrorCode.NOT_FOUND);
        } finally {
          peer.close();
        }
      },
    );

    await t.step(
      "a peer cannot spoil another origin's transfer of the same bytes: each origin's halves are its own",
      async () => {
        // alpha.test's server (its real key) and gamma.test's, both at beta.
        const honest = await PeerClient.connect(
          { host: b.host, port: b.port },
          peerOptions,
        );
        await honest.authenticate(keysA, {
          host: a.host,
          domain: "alpha.test",
          destinations: ["beta.test"],
        });
        const peer = await hostile();
        try {
          const real = randomBytes(CHUNK + 77);
          const sha256 = await sha256Hex(real);
          const blob = (from: string) => ({
            module: "messages",
            from,
            to: ["bob@beta.test"],
            sha256,
            size: real.byteLength,
            op: "put",
          });
          await honest.call("s2s_blob", {
            ...blob("alice@alpha.test"),
            offset: 0,
            data: real.subarray(0, CHUNK),
          });
          // gamma sends the same hash with other bytes, to the end: refused.
          await peer.call("s2s_blob", {
            ...blob("carl@gamma.test"),
            offset: 0,
            data: new Uint8Array(CHUNK),
          });
          await refused(
            peer.call("s2s_blob", {
              ...blob("carl@gamma.test"),
              offset: CHUNK,
              data: real.subarray(CHUNK),
            }),
            ErrorCode.INVALID_PARAMETER,
          );
          // alpha's half is intact: it goes on from there and completes.
          const offer = await honest.call<{ offset: number }>("s2s_blob", {
            ...blob("alice@alpha.test"),
            op: "offer",
          });
          assert.equal(offer.offset, CHUNK);
          const done = await honest.call<{ offset: number }>("s2s_blob", {
            ...blob("alice@alpha.test"),
            offset: CHUNK,
            data: real.subarray(CHUNK),
          });
          assert.equal(done.offset, real.byteLength);
          // Verified once, held for every origin: gamma now has nothing to send.
          assert.equal(
            (await peer.call<{ offset: number }>("s2s_blob", {
              ...blob("carl@gamma.test"),
              op: "offer",
            })).offset,
            real.byteLength,
          );
        } finally {
          honest.close();
          peer.close();
        }
      },
    );

    await t.step(
      "refused: an oversized claim, a gap, a chunk past the size, a stranger recipient, a foreign sender, a recipient over quota, a 65th unfinished transfer, no authentication",
      async () => {
        const peer = await hostile();
        try {
          const common = {
            module: "messages",
            from: "carl@gamma.test",
            to: ["bob@beta.test"],
            sha256: "ab".repeat(32),
            size: 3 * CHUNK,
          };
          await refused(
            peer.call("s2s_blob", {
              ...common,
              op: "offer",
              size: 26 * 1024 * 1024,
            }),
            ErrorCode.LIMIT_EXCEEDED,
          );
          await refused(
            peer.call("s2s_blob", {
              ...common,
              op: "put",
              size: 26 * 1024 * 1024,
              offset: 0,
              data: new Uint8Array(CHUNK),
            }),
            ErrorCode.LIMIT_EXCEEDED,
          );
          await refused(
            peer.call("s2s_blob", {
              ...common,
              op: "put",
              offset: CHUNK,
              data: new Uint8Array(CHUNK),
            }),
            ErrorCode.INVALID_PARAMETER,
          );
          await refused(
            peer.call("s2s_blob", {
              ...common,
              op: "put",
              size: 10,
              offset: 0,
              data: new Uint8Array(11),
            }),
            ErrorCode.INVALID_PARAMETER,
          );
          await refused(
            peer.call("s2s_blob", {
              ...common,
              op: "put",
              offset: 0,
              data: new Uint8Array(1000),
            }),
            ErrorCode.INVALID_PARAMETER,
          );
          await refused(
            peer.call("s2s_blob", {
              ...common,
              op: "offer",
              to: ["bob@alpha.test"],
            }),
            ErrorCode.S2S_WRONG_DESTINATION,
          );
          await refused(
            peer.call("s2s_blob", {
              ...common,
              op: "offer",
              from: "alice@alpha.test",
            }),
            ErrorCode.S2S_FROM_MISMATCH,
          );
          // A recipient whose quota the blob exceeds.
          await world.addUser("tiny@beta.test");
          const admin = await world.connect(b);
          await admin.call("admin_set_user", {
            admin_token: b.adminToken,
            address: "tiny@beta.test",
            quota: 100_000,
          });
          admin.close();
          await refused(
            peer.call("s2s_blob", {
              ...common,
              op: "offer",
              to: ["tiny@beta.test"],
            }),
            ErrorCode.LIMIT_EXCEEDED,
          );
          // Without an offer too.
          await refused(
            peer.call("s2s_blob", {
              ...common,
              op: "put",
              to: ["tiny@beta.test"],
              offset: 0,
              data: new Uint8Array(CHUNK),
            }),
            ErrorCode.LIMIT_EXCEEDED,
          );
          // At most 64 unfinished transfers per origin (a disk filled with
          // halves): the 65th is refused.
          const half = new Uint8Array(CHUNK);
          for (let i = 0; i < 64; i++) {
            const answer = await peer.call<{ offset: number }>("s2s_blob", {
              ...common,
              sha256: i.toString(16).padStart(64, "e"),
              op: "put",
              offset: 0,
              data: half,
            });
            assert.equal(answer.offset, CHUNK);
          }
          await refused(
            peer.call("s2s_blob", {
              ...common,
              sha256: "f".repeat(64),
              op: "put",
              offset: 0,
              data: half,
            }),
            ErrorCode.LIMIT_EXCEEDED,
          );
        } finally {
          peer.close();
        }
        const stranger = await PeerClient.connect(
          { host: b.host, port: b.port },
          peerOptions,
        );
        try {
          await refused(
            stranger.call("s2s_blob", {
              module: "messages",
              op: "offer",
              from: "carl@gamma.test",
              to: ["bob@beta.test"],
              sha256: "cd".repeat(32),
              size: 10,
            }),
            ErrorCode.S2S_NOT_AUTHENTICATED,
          );
        } finally {
          stranger.close();
        }
      },
    );

    await t.step(
      "a recipient over quota: the sender gets a bounce naming the reason",
      async () => {
        const alice = await world.mail("alice@alpha.test");
        const file = await upload(alice, "mid.bin", randomBytes(CHUNK * 2));
        const sent = await alice.call<{ message_id: string }>("send", {
          to: ["tiny@beta.test"],
          subject: "Too big for tiny",
          body: "x",
          attachments: [file.id],
        });
        const bounce = await pushOf(
          alice,
          "message_new",
          (d) => String(d.subject).startsWith("Undeliverable"),
          60_000,
        );
        const got = await alice.call<{ body: string }>("get", {
          id: bounce.id,
        });
        assert.match(got.body, /tiny@beta\.test: error 206: .*full/);
        assert.match(got.body, new RegExp(sent.message_id));
      },
    );
  } finally {
    await world.close();
  }
});

Deno.test("federation attachments: the receiving server checks each recipient's own attachment limit when the message arrives (one held lower bounces, the other receives)", async () => {
  const world = await startWorld([
    ["a.example.test", "alpha.test"],
    ["b.example.test", "beta.test"],
  ], {
    // Held on beta: one user at 1000 bytes, everyone else at the default.
    AMTP_MESSAGES_MAX_ATTACHMENT_FOR: "small@beta.test=1000",
  });
  try {
    for (
      const address of ["alice@alpha.test", "big@beta.test", "small@beta.test"]
    ) await world.addUser(address);
    const alice = await world.mail("alice@alpha.test");
    const file = await upload(alice, "f.bin", randomBytes(64 * 1024));
    const sent = await alice.call<{ global_id: string }>("send", {
      to: ["big@beta.test", "small@beta.test"],
      subject: "limits",
      body: "see attached",
      attachments: [file.id],
    });
    const big = await world.mail("big@beta.test");
    const small = await world.mail("small@beta.test");
    await pushOf(
      big,
      "message_new",
      (d) => d.global_id === sent.global_id,
      60_000,
    );
    // The refusal comes back to the sender as a bounce naming the limit.
    const bounce = await pushOf(
      alice,
      "message_new",
      (d) => String(d.subject).startsWith("Undeliverable"),
      60_000,
    );
    const text = await alice.call<{ body: string }>("get", { id: bounce.id });
    assert.match(
      text.body,
      /small@beta\.test: error 206: .*at most 1000 bytes/,
    );
    assert.doesNotMatch(text.body, /big@beta\.test/);
    const inbox = await small.call<{ messages: { global_id: string }[] }>(
      "list",
      { folder: "inbox" },
    );
    assert.equal(
      inbox.messages.filter((m) => m.global_id === sent.global_id).length,
      0,
    );
  } finally {
    await world.close();
  }
});
