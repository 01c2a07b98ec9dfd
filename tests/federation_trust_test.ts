/**
 * Attacks on server-to-server trust with real server processes, dnsmasq and
 * a test CA: a relayed server proof, a session used beyond the domains it
 * named, spoofed DNS records against a domain whose delivery policy is
 * cached (as sender and as receiver), and weak RSA server keys.
 */

import assert from "node:assert/strict";
import type { AmtpClient } from "../client/mod.ts";
import { toBase64 } from "../shared/login/algorithms.ts";
import { PeerClient } from "../core/federation/peers.ts";
import { DnsResolver } from "../core/federation/dns.ts";
import { ServerKeys } from "../core/federation/keys.ts";
import { ErrorCode, ProtocolError } from "../core/protocol/mod.ts";
import { S2S_ALPN } from "../core/wire/mod.ts";
import {
  decodeDocument,
  type Document,
  encodeDocument,
  FrameDecoder,
} from "../core/wire/mod.ts";
import {
  type Node,
  startWorld,
  type World,
} from "../testing/federation_world.ts";
import { makeKey, waitFor } from "../testing/helpers.ts";
import { mailSession, pushOf } from "../testing/mail.ts";

/**
 * A man in the middle between a sending server and a receiving one: it
 * answers QUIC for its own name (with a certificate of its own), connects to
 * the receiver, forwards every frame, rewrites the receiver name the sender
 * signs for to the real receiver's, and once the sender authenticated,
 * injects its own delivery on the receiver's session.
 */
async function startRelay(
  world: World,
  name: string,
  target: Node,
  forged: Document,
): Promise<{
  port: number;
  authAnswer: Promise<Document>;
  forgedAnswer: Promise<Document>;
  close(): void;
}> {
  const { certPem, keyPem } = await world.certificate([name]);
  const endpoint = new Deno.QuicEndpoint({ hostname: "127.0.0.1", port: 0 });
  const listener = endpoint.listen({
    cert: certPem,
    key: keyPem,
    alpnProtocols: [S2S_ALPN],
  });
  let authSeen!: (d: Document) => void;
  let forgedSeen!: (d: Document) => void;
  const authAnswer = new Promise<Document>((r) => authSeen = r);
  const forgedAnswer = new Promise<Document>((r) => forgedSeen = r);
  (async () => {
    for await (const incoming of listener) {
      const inner = await incoming.accept();
      const sender = await inner.incomingBidirectionalStreams.getReader()
        .read();
      if (sender.done) continue;
      const outer = await Deno.connectQuic({
        hostname: "127.0.0.1",
        port: target.port,
        serverName: target.host,
        alpnProtocols: [S2S_ALPN],
        caCerts: [world.caPem],
      });
      const receiver = await outer.createBidirectionalStream();
      const toReceiver = receiver.writable.getWriter();
      const toSender = sender.value.writable.getWriter();
      let authId: unknown;
      (async () => {
        const decoder = new FrameDecoder(1 << 20);
        for await (const chunk of sender.value.readable) {
          for (const frame of decoder.pushOrThrow(chunk)) {
            const doc = decodeDocument(frame);
            if (doc.command === "s2s_hello" || doc.command === "s2s_auth") {
              doc.receiver = target.host;
            }
            if (doc.command === "s2s_auth") authId = doc.requestID;
            await toReceiver.write(encodeDocument(doc));
          }
        }
      })().catch(() => {});
      (async () => {
        const decoder = new FrameDecoder(1 << 20);
        for await (const chunk of receiver.readable) {
          for (const frame of decoder.pushOrThrow(chunk)) {
            const doc = decodeDocument(frame);
            if (doc.requestID === "forged") {
              forgedSeen(doc);
              continue;
            }
            if (authId !== undefined && doc.requestID === authId) {
              authSeen(doc);
              await toReceiver.write(
                encodeDocument({ ...forged, requestID: "forged" }),
              );
            }
            await toSender.write(frame);
          }
        }
      })().catch(() => {});
    }
  })().catch(() => {});
  return {
    port: endpoint.addr.port,
    authAnswer,
    forgedAnswer,
    close: () => {
      listener.stop();
      endpoint.close();
    },
  };
}

Deno.test("federation trust: relayed proofs, session scope, policies against DNS spoofing, weak keys", async (t) => {
  const world = await startWorld([
    ["a.example.test", "alpha.test"],
    ["b.example.test", "beta.test"],
    ["e.example.test", "evil.test"],
  ], { AMTP_DNS_CACHE: "0" });
  const [a, b, e] = world.nodes;
  const clients: AmtpClient[] = [];
  const admin = async (node: Node) => {
    const client = await world.connect(node);
    clients.push(client);
    return (command: string, params: Record<string, unknown> = {}) =>
      client.call<Record<string, unknown>>(command, {
        admin_token: node.adminToken,
        ...params,
      });
  };
  const resolver = new DnsResolver({
    nameServer: world.dns.address,
    cacheSeconds: 0,
  });
  const peer = (node: Node) =>
    PeerClient.connect({ host: node.host, port: node.port }, {
      dns: resolver,
      caCerts: [world.caPem],
      connectTimeoutMs: 2000,
      requestTimeoutMs: 5000,
      maxFrame: 1 << 20,
    });
  const refused = async (work: Promise<unknown>, code: number) => {
    await assert.rejects(work, (error: unknown) => {
      assert.ok(error instanceof ProtocolError, String(error));
      assert.equal(error.code, code, error.message);
      return true;
    });
  };
  const keysA = await ServerKeys.open(`${a.dir}/data`);
  const keysE = await ServerKeys.open(`${e.dir}/data`);
  try {
    const adminA = await admin(a);
    const adminB = await admin(b);
    const adminE = await admin(e);
    await world.addUser("alice@alpha.test");
    await world.addUser("bob@beta.test");
    const alice = await world.mail("alice@alpha.test");
    const bob = await world.mail("bob@beta.test");
    const inbox = async (s: typeof bob) =>
      (await s.call<{ messages: { subject: string }[] }>("list", {}))
        .messages.map((m) => m.subject);

    await t.step(
      "a relay cannot use another server's proof, and a session delivers only to the domains it named",
      async () => {
        // beta's server also hosts x.test for someone else, who points x.test at a relay of theirs.
        await adminB("admin_add_domain", { domain: "x.test" });
        const relay = await startRelay(world, "relay.example.test", b, {
          command: "s2s_deliver",
          module: "messages",
          from: "alice@alpha.test",
          to: ["bob@beta.test"],
          id: "forged-1",
          payload: { subject: "forged via relay", body: "IBAN DE00 EVIL" },
        });
        try {
          await world.publish({
            txt: [["x.test", `amtp-servers=relay.example.test:${relay.port}`]],
            hosts: [["relay.example.test", "127.0.0.1"]],
          });
          await alice.call("send", {
            to: ["someone@x.test"],
            subject: "to x",
            body: "hello x",
          });
          const auth = await relay.authAnswer;
          assert.equal(
            auth.error,
            ErrorCode.S2S_AUTH_FAILED,
            String(auth.message),
          );
          const forged = await relay.forgedAnswer;
          assert.equal(forged.error, ErrorCode.S2S_NOT_AUTHENTICATED);
          assert.ok(!(await inbox(bob)).includes("forged via relay"));
        } finally {
          relay.close();
          await world.publish();
        }
        // A real session of alpha's server, opened for x.test, cannot reach beta.test.
        const p = await peer(b);
        await p.authenticate(keysA, {
          host: a.host,
          domain: "alpha.test",
          destinations: ["x.test"],
        });
        const answer = await p.call<
          { recipients: { address: string; error?: number }[] }
        >("s2s_deliver", {
          module: "messages",
          from: "alice@alpha.test",
          to: ["bob@beta.test"],
          id: "scope-1",
          payload: { subject: "out of scope", body: "x" },
        });
        assert.equal(
          answer.recipients[0].error,
          ErrorCode.S2S_WRONG_DESTINATION,
        );
        await refused(
          p.call("s2s_userinfo", { address: "bob@beta.test" }),
          ErrorCode.S2S_WRONG_DESTINATION,
        );
        p.close();
        assert.ok(!(await inbox(bob)).includes("out of scope"));
        // And no server speaks for a domain the receiver hosts itself.
        const q = await peer(b);
        await refused(
          q.authenticate(keysA, {
            host: a.host,
            domain: "beta.test",
            destinations: ["x.test"],
          }),
          ErrorCode.S2S_NOT_DELEGATED,
        );
        q.close();
      },
    );

    await t.step(
      "a sender with beta's policy cached sends nothing to a server that spoofed DNS names for beta.test",
      async () => {
        await world.publish({ policies: ["beta.test"] });
        const first = await alice.call<{ message_id: string }>("send", {
          to: ["bob@beta.test"],
          subject: "before the spoof",
          body: "one",
        });
        await pushOf(
          bob,
          "message_new",
          (d) => d.global_id === `${first.message_id}@alpha.test`,
        );
        // The evil server hosts beta.test too and would take bob's mail.
        await adminE("admin_add_domain", { domain: "beta.test" });
        const key = await makeKey("HPKE-X25519");
        await adminE("admin_add_user", {
          address: "bob@beta.test",
          algorithm: key.algorithm,
          public_key: key.publicKey,
        });
        const evilClient = await world.connect(e);
        clients.push(evilClient);
        const evilBob = await mailSession(evilClient, "bob@beta.test", key);
        // DNS now sends beta.test's mail to the evil server and hides the policy.
        await world.publish({
          txt: [["beta.test", `amtp-servers=${e.host}:${e.port}`]],
        });
        await alice.call("send", {
          to: ["bob@beta.test"],
          subject: "after the spoof",
          body: "IBAN DE00 ALICE",
        });
        await waitFor(
          async () => {
            const items = (await adminA("admin_get_queue")).items as {
              attempts: number;
              last_error: string;
            }[];
            return items.some((i) =>
              i.attempts > 0 && /delivery policy/.test(i.last_error)
            );
          },
          15_000,
          "the queue holding the message back by policy",
        );
        assert.deepEqual(await inbox(evilBob), []);
        const reports = (await adminA("admin_get_policy_reports"))
          .reports as { domain: string; count: number; detail: string }[];
        const beta = reports.find((r) => r.domain === "beta.test");
        assert.ok(beta && beta.count > 0, JSON.stringify(reports));
        assert.match(beta.detail, /e\.example\.test/);
        // DNS repaired: the held message reaches the real bob.
        await world.publish({ policies: ["beta.test"] });
        await waitFor(
          async () => (await inbox(bob)).includes("after the spoof"),
          15_000,
          "the message at the real server",
        );
        assert.deepEqual(await inbox(evilBob), []);
      },
    );

    await t.step(
      "a receiver with alpha's policy cached refuses spoofed amtp-servers and amtp-dkim for alpha.test",
      async () => {
        await world.publish({ policies: ["alpha.test", "beta.test"] });
        // alpha's server authenticating (anew) makes beta's server fetch alpha's policy.
        const warm = await peer(b);
        await warm.authenticate(keysA, {
          host: a.host,
          domain: "alpha.test",
          destinations: ["beta.test"],
        });
        warm.close();
        assert.match(b.server!.stderr(), /policy_fetched.*domain=alpha\.test/);
        // Spoofed: alpha.test's servers now name the evil host, which signs with its own key.
        await world.publish({
          policies: ["beta.test"],
          txt: [["alpha.test", `amtp-servers=${e.host}:${e.port}`]],
        });
        const p1 = await peer(b);
        await refused(
          p1.authenticate(keysE, {
            host: e.host,
            domain: "alpha.test",
            destinations: ["beta.test"],
          }),
          ErrorCode.POLICY_VIOLATION,
        );
        p1.close();
        // Spoofed: alpha's own server name now publishes the evil key.
        await world.publish({
          policies: ["beta.test"],
          txt: [[a.host, `amtp-dkim=${await world.keyRecord(e)}`]],
        });
        const p2 = await peer(b);
        await refused(
          p2.authenticate(keysE, {
            host: a.host,
            domain: "alpha.test",
            destinations: ["beta.test"],
          }),
          ErrorCode.POLICY_VIOLATION,
        );
        p2.close();
        assert.ok(!(await inbox(bob)).includes("forged"));
        await world.publish();
      },
    );

    await t.step("RSA server keys under 2048 bits are refused", async () => {
      const pair = await crypto.subtle.generateKey(
        {
          name: "RSASSA-PKCS1-v1_5",
          hash: "SHA-256",
          modulusLength: 1024,
          publicExponent: new Uint8Array([1, 0, 1]),
        },
        true,
        ["sign", "verify"],
      );
      const spki = new Uint8Array(
        await crypto.subtle.exportKey("spki", pair.publicKey),
      );
      await world.publish({
        txt: [[e.host, `amtp-dkim=v=DKIM1;h=sha256;k=rsa;p=${toBase64(spki)}`]],
      });
      const weak = {
        sign: async (data: Uint8Array) =>
          new Uint8Array(
            await crypto.subtle.sign(
              "RSASSA-PKCS1-v1_5",
              pair.privateKey,
              new Uint8Array(data),
            ),
          ),
      } as unknown as ServerKeys;
      const p = await peer(b);
      await assert.rejects(
        p.authenticate(weak, {
          host: e.host,
          domain: "evil.test",
          destinations: ["beta.test"],
        }),
        (error: unknown) => {
          assert.ok(error instanceof ProtocolError);
          assert.equal(error.code, ErrorCode.S2S_AUTH_FAILED);
          assert.match(error.message, /1024 bits is too weak/);
          return true;
        },
      );
      p.close();
      await world.publish();
    });
  } finally {
    if (Deno.env.get("AMTP_TEST_DEBUG")) {
      for (const node of world.nodes) {
        console.error(`--- ${node.host}\n${node.server?.stderr()}`);
      }
    }
    for (const client of clients) client.close();
    await world.close();
  }
});
