/**
 * Federation with three server processes on loopback, dnsmasq as the DNS
 * server and a test CA: delivery between domains, failover, a stopped
 * receiver, bounces, and every refusal of server authentication.
 */

import assert from "node:assert/strict";
import {
  decryptMessage,
  deviceCode,
  E2eError,
  encryptMessage,
  MemoryTrustStore,
} from "../client/e2e.ts";
import {
  approveDevice,
  type DeviceFile,
  initDevice,
  keysOf,
  planEncryption,
  revokeDevice,
} from "../client/e2e_cli.ts";
import type { AmtpClient } from "../client/mod.ts";
import { PeerClient } from "../core/federation/peers.ts";
import { DnsResolver } from "../core/federation/dns.ts";
import { ServerKeys } from "../core/federation/keys.ts";
import { signedText } from "../core/federation/proof.ts";
import { ErrorCode, ProtocolError } from "../core/protocol/mod.ts";
import { freePort } from "../testing/dnsmasq.ts";
import { type Node, startWorld } from "../testing/federation_world.ts";
import { waitFor } from "../testing/helpers.ts";
import { type MailSession, pushOf } from "../testing/mail.ts";
import { runCli } from "../testing/process.ts";

Deno.test("federation: three servers, DNS, signed server authentication, durable queue", async (t) => {
  const world = await startWorld([
    ["a.example.test", "alpha.test"],
    ["b2.example.test", "beta.test"],
    ["c.example.test", "gamma.test"],
  ]);
  const [a, b, c] = world.nodes;
  const deadPort = freePort();
  const clients: AmtpClient[] = [];
  // beta.test lists a dead server first; delta.test only a dead one.
  const zone = (
    overrides: Record<string, string> = {},
    policies: string[] = [],
  ) =>
    world.publish({
      policies,
      txt: [
        [
          "beta.test",
          `amtp-servers=b1.example.test:${deadPort},${b.host}:${b.port}`,
        ],
        ["delta.test", `amtp-servers=d.example.test:${deadPort}`],
        ...Object.entries(overrides),
      ],
      hosts: [["b1.example.test", "127.0.0.1"], [
        "d.example.test",
        "127.0.0.1",
      ]],
    });
  const connect = async (node: Node) => {
    const client = await world.connect(node);
    clients.push(client);
    return client;
  };
  try {
    await zone();
    for (
      const address of [
        "alice@alpha.test",
        "bob@beta.test",
        "bea@beta.test",
        "carl@gamma.test",
      ]
    ) {
      await world.addUser(address);
    }
    clients.push(await world.connect(a));
    const openMail = (_node: Node, address: string) => world.mail(address);
    const alice = await openMail(a, "alice@alpha.test");

    await t.step(
      "a message to two other domains is delivered and pushed live (beta.test via its second server)",
      async () => {
        const bob = await openMail(b, "bob@beta.test");
        const bob2 = await openMail(b, "bob@beta.test");
        const carl = await openMail(c, "carl@gamma.test");
        const sent = await alice.call<
          { global_id: string; recipients: { status: string }[] }
        >("send", {
          to: ["bob@beta.test", "carl@gamma.test"],
          subject: "Across servers",
          body: "Hello from alpha",
        });
        assert.deepEqual(sent.recipients.map((r) => r.status), [
          "queued",
          "queued",
        ]);
        // Each server has its own id for the message; its global id is one.
        const pushed = [];
        for (const s of [bob, bob2, carl]) {
          const push = await pushOf(
            s,
            "message_new",
            (d) => d.global_id === sent.global_id,
          );
          assert.equal(push.from, "alice@alpha.test");
          assert.equal(push.subject, "Across servers");
          pushed.push(push);
        }
        const got = await carl.call<{ body: string }>("get", {
          id: pushed[2].id,
        });
        assert.equal(got.body, "Hello from alpha");
        await waitFor(
          async () =>
            (await clients[0].call<{ items: unknown[] }>("admin_get_queue", {
              admin_token: a.adminToken,
            })).items.length === 0,
          10_000,
          "empty queue",
        );
        // A reply goes back the other way, in the same thread.
        const reply = await bob.call<{ global_id: string }>("send", {
          to: ["alice@alpha.test"],
          subject: "Re: Across servers",
          body: "Hi back",
          in_reply_to: pushed[0].id,
        });
        const answer = await pushOf(
          alice,
          "message_new",
          (d) => d.global_id === reply.global_id,
        );
        const thread = await alice.call<{ messages: { subject: string }[] }>(
          "thread",
          { id: answer.id },
        );
        assert.deepEqual(thread.messages.map((m) => m.subject), [
          "Across servers",
          "Re: Across servers",
        ]);
      },
    );

    await t.step(
      "a stopped receiver: the message waits in the queue and arrives exactly once",
      async () => {
        const code = await c.server!.stop("SIGTERM");
        assert.equal(code, 0);
        const sent = await alice.call<
          { global_id: string; recipients: { status: string }[] }
        >("send", {
          to: ["carl@gamma.test"],
          subject: "While you were down",
          body: "queued",
        });
        assert.equal(sent.recipients[0].status, "queued");
        await waitFor(
          async () => {
            const q = await clients[0].call<
              { items: { attempts: number; last_error: string }[] }
            >("admin_get_queue", { admin_token: a.adminToken });
            return q.items.length === 1 && q.items[0].attempts >= 1;
          },
          10_000,
          "a failed attempt",
        );
        await world.start(c);
        const carl = await openMail(c, "carl@gamma.test");
        await waitFor(
          async () => {
            const inbox = await carl.call<
              { messages: { global_id: string }[] }
            >("list");
            return inbox.messages.some((m) => m.global_id === sent.global_id);
          },
          15_000,
          "delivery after restart",
        );
        await waitFor(
          async () =>
            (await clients[0].call<{ items: unknown[] }>("admin_get_queue", {
              admin_token: a.adminToken,
            })).items.length === 0,
          10_000,
          "empty queue",
        );
        const inbox = await carl.call<{ messages: { global_id: string }[] }>(
          "list",
          { limit: 200 },
        );
        assert.equal(
          inbox.messages.filter((m) => m.global_id === sent.global_id).length,
          1,
        );
      },
    );

    await t.step(
      "a permanently failing destination bounces; a domain without the record too, at once",
      async () => {
        const dead = await alice.call<{ message_id: string }>("send", {
          to: ["x@delta.test"],
          subject: "Into the void",
          body: ".",
        });
        const none = await alice.call<{ message_id: string }>("send", {
          to: ["y@nodns.test"],
          subject: "Nowhere",
          body: ".",
        });
        const noRecord = await pushOf(
          alice,
          "message_new",
          (d) => d.subject === "Undeliverable: Nowhere",
        );
        assert.equal(noRecord.from, "mailer-daemon@alpha.test");
        const notice = await alice.call<{ body: string; in_reply_to: string }>(
          "get",
          { id: noRecord.id as string },
        );
        assert.match(
          notice.body,
          /y@nodns\.test: error 504: nodns\.test publishes no amtp-servers record/,
        );
        assert.equal(notice.in_reply_to, none.message_id);
        const expired = await pushOf(
          alice,
          "message_new",
          (d) => d.subject === "Undeliverable: Into the void",
          // The lifetime is 6 s; attempts and retries come on top of it.
          30_000,
        );
        const body = await alice.call<{ body: string }>("get", {
          id: expired.id as string,
        });
        assert.match(
          body.body,
          /x@delta\.test: error 505: not delivered within 6 s/,
        );
        assert.equal(body.body.includes(dead.message_id), true);
        // The user sees the same clear error asking for a profile there.
        const remote = await alice.client.request("user_userinfo", {
          user_token: alice.token,
          address: "y@nodns.test",
        });
        assert.equal(remote.error, ErrorCode.NO_AMTP_RECORD);
      },
    );

    await t.step(
      "remote profiles are answered through the remote server",
      async () => {
        const profile = await alice.client.call<
          { address: string; name: string }
        >("user_userinfo", {
          user_token: alice.token,
          address: "bob@beta.test",
        });
        assert.equal(profile.address, "bob@beta.test");
        assert.equal(profile.name, "bob");
        const missing = await alice.client.request("user_userinfo", {
          user_token: alice.token,
          address: "nobody@beta.test",
        });
        assert.equal(missing.error, ErrorCode.NOT_FOUND);
      },
    );

    await t.step(
      "end to end across three servers: two devices per user, one approved with its code, one revoked, a ghost device; readable on exactly the verified devices, by no server",
      async () => {
        const MARKER = "E2E-MARKER-7f3a9c";
        const CONTROL = "PLAIN-CONTROL-5b1d";
        const bob = await openMail(b, "bob@beta.test");
        const carl = await openMail(c, "carl@gamma.test");
        // Each device keeps its keys in its own folder, as separate machines would.
        const device = async (s: MailSession, name: string) => {
          const stateFile = `${world.root}/device-${name}/state.json`;
          await Deno.mkdir(`${world.root}/device-${name}`, { recursive: true });
          const result = await initDevice(s.client, {
            token: s.token,
            address: s.address,
            label: name,
            stateFile,
          });
          return { ...result, stateFile };
        };
        const aliceLaptop = await device(alice, "alice-laptop");
        const alicePhone = await device(alice, "alice-phone");
        const bobPhone = await device(bob, "bob-phone");
        const bobTablet = await device(bob, "bob-tablet");
        const carlLaptop = await device(carl, "carl-laptop");
        const carlGhost = await device(carl, "carl-ghost");
        assert.equal(aliceLaptop.kind, "listed");
        assert.equal(alicePhone.kind, "pending");
        // Approval needs the code the new device shows; a wrong device id is refused.
        await assert.rejects(() =>
          approveDevice(alice.client, {
            token: alice.token,
            file: aliceLaptop.file,
            id: "0000000000000000",
          })
        );
        const shown = await deviceCode(alice.address, {
          enc: alicePhone.file.device.encryptPublic,
          sign: alicePhone.file.device.signPublic,
        });
        const pendingOnServer = (await keysOf(
          alice.client,
          alice.token,
          alice.address,
        )).pending.find((p) => p.id === alicePhone.file.device.id)!;
        assert.equal(await deviceCode(alice.address, pendingOnServer), shown);
        await approveDevice(alice.client, {
          token: alice.token,
          file: aliceLaptop.file,
          id: alicePhone.file.device.id,
        });
        await approveDevice(bob.client, {
          token: bob.token,
          file: bobPhone.file,
          id: bobTablet.file.device.id,
        });
        // A device of a list holder that is not the master holder cannot approve.
        await assert.rejects(() =>
          approveDevice(carl.client, {
            token: carl.token,
            file: carlGhost.file,
            id: carlGhost.file.device.id,
          })
        );
        const revoked = await revokeDevice(bob.client, {
          token: bob.token,
          file: bobPhone.file,
          id: bobTablet.file.device.id,
        });
        assert.equal(revoked.counter, 3);
        // Alice's laptop plans: through the servers, fresh profiles; carl's pending device is ignored, with a note.
        const trust = new MemoryTrustStore();
        const plan = await planEncryption(alice.client, {
          token: alice.token,
          sender: alice.address,
          file: aliceLaptop.file,
          to: ["bob@beta.test", "carl@gamma.test"],
          bcc: [],
          trust,
        });
        assert.ok(plan.encrypt, JSON.stringify(plan));
        assert.deepEqual(
          plan.targets.map((x) => [x.address, x.devices.map((d) => d.label)]),
          [
            ["bob@beta.test", ["bob-phone"]],
            ["carl@gamma.test", ["carl-laptop"]],
            ["alice@alpha.test", ["alice-laptop", "alice-phone"]],
          ],
        );
        assert.ok(plan.notes.some((n) => /carl-ghost/.test(n)));
        const clientId = crypto.randomUUID();
        const envelope = await encryptMessage({
          subject: "Secret subject",
          body: `${MARKER} the vault code`,
          format: "text",
        }, {
          sender: alice.address,
          device: aliceLaptop.file.device,
          recipients: plan.targets,
          headers: {
            to: ["bob@beta.test", "carl@gamma.test"],
            cc: [],
            date: new Date(),
            message_id: "x@alpha.test",
            in_reply_to: null,
          },
        });
        const sent = await alice.call<{ global_id: string; id: string }>(
          "send",
          {
            to: ["bob@beta.test", "carl@gamma.test"],
            subject: "",
            body: envelope,
            encrypted: true,
            client_id: clientId,
          },
        );
        await alice.call("send", {
          to: ["bob@beta.test"],
          subject: "control",
          body: `${CONTROL} readable by servers`,
        });
        // Each recipient's copy, by its id on its own server.
        const received: string[] = [];
        for (const session of [bob, carl]) {
          received.push(String(
            (await pushOf(
              session,
              "message_new",
              (d) => d.global_id === sent.global_id,
            )).id,
          ));
        }
        const readOn = async (s: MailSession, id: string, file: DeviceFile) => {
          const got = await s.call<{ body: Uint8Array; encrypted: boolean }>(
            "get",
            { id },
          );
          assert.equal(got.encrypted, true);
          return await decryptMessage(got.body, {
            address: s.address,
            device: file.device,
          });
        };
        for (
          const [s, id, d] of [
            [bob, received[0], bobPhone],
            [carl, received[1], carlLaptop],
            [alice, sent.id, aliceLaptop],
            [alice, sent.id, alicePhone],
          ] as const
        ) {
          const opened = await readOn(s, id, d.file);
          assert.equal(opened.content.body, `${MARKER} the vault code`);
          assert.equal(opened.content.subject, "Secret subject");
          assert.equal(opened.signatureValid, true);
        }
        // Not on the revoked tablet, not on the ghost.
        for (
          const [s, id, d] of [
            [bob, received[0], bobTablet],
            [carl, received[1], carlGhost],
          ] as const
        ) {
          await assert.rejects(
            () => readOn(s, id, d.file),
            (e: unknown) =>
              e instanceof E2eError && e.code === "not_a_recipient",
          );
        }
        // The plaintext is in no server's files or logs; the control message is (so the search works).
        const inFiles = async (dir: string, bytes: Uint8Array) => {
          for await (const entry of Deno.readDir(dir)) {
            const path = `${dir}/${entry.name}`;
            if (entry.isDirectory && await inFiles(path, bytes)) return true;
            if (!entry.isFile) continue;
            const data = await Deno.readFile(path);
            outer: for (let i = 0; i <= data.length - bytes.length; i++) {
              for (let j = 0; j < bytes.length; j++) {
                if (data[i + j] !== bytes[j]) continue outer;
              }
              return true;
            }
          }
          return false;
        };
        // Every file under data/, the modules' databases included.
        const found = async (node: Node, needle: string) =>
          await inFiles(`${node.dir}/data`, new TextEncoder().encode(needle)) ||
          node.server!.stderr().includes(needle) ||
          node.server!.stdout().includes(needle);
        await waitFor(
          async () => await found(b, CONTROL),
          5000,
          "the control message on disk",
        );
        for (const node of [a, b, c]) {
          assert.equal(
            await found(node, MARKER),
            false,
            `${node.host} holds the plaintext`,
          );
          assert.equal(
            await found(node, "Secret subject"),
            false,
            `${node.host} holds the subject`,
          );
        }
      },
    );

    const resolver = new DnsResolver({ nameServer: world.dns.address });
    const peerOptions = {
      dns: resolver,
      caCerts: [world.caPem],
      connectTimeoutMs: 2000,
      requestTimeoutMs: 5000,
      maxFrame: 1 << 20,
    };
    const keysA = await ServerKeys.open(`${a.dir}/data`);
    const keysC = await ServerKeys.open(`${c.dir}/data`);
    const peer = async (node: Node) =>
      await PeerClient.connect(
        { host: node.host, port: node.port },
        peerOptions,
      );
    const refused = async (work: Promise<unknown>, code: number) => {
      await assert.rejects(work, (error: unknown) => {
        assert.ok(error instanceof ProtocolError, String(error));
        assert.equal(error.code, code, error.message);
        return true;
      });
    };

    await t.step(
      "refused: a server not listed for its domain, a wrong key, a replayed signature, a from outside the domain",
      async () => {
        // c.example.test signs correctly but claims alpha.test, which lists only a.example.test.
        const p1 = await peer(b);
        await refused(
          p1.authenticate(keysC, {
            host: c.host,
            domain: "alpha.test",
            destinations: ["beta.test"],
          }),
          ErrorCode.S2S_NOT_DELEGATED,
        );
        p1.close();
        // a.example.test's name with c's key: the published key does not verify it.
        const p2 = await peer(b);
        await refused(
          p2.authenticate(keysC, {
            host: a.host,
            domain: "alpha.test",
            destinations: ["beta.test"],
          }),
          ErrorCode.S2S_AUTH_FAILED,
        );
        p2.close();
        // A signature made for beta.test's server, replayed to gamma.test's server.
        const toB = await peer(b);
        const { challenge } = await toB.call<{ challenge: string }>(
          "s2s_hello",
          { receiver: b.host },
        );
        const claim = {
          challenge,
          nonce: "bm9uY2Utb2YtdGhlLXNlbmRlcg==",
          host: a.host,
          receiver: b.host,
          domain: "alpha.test",
          destinations: ["beta.test"],
          timestamp: Date.now(),
        };
        const signature = await keysA.sign(signedText(claim));
        const toC = await peer(c);
        // Gamma's server will not even issue a challenge for another server's name.
        await refused(
          toC.call("s2s_hello", { receiver: b.host }),
          ErrorCode.S2S_AUTH_FAILED,
        );
        await toC.call("s2s_hello", { receiver: c.host });
        await refused(
          toC.call("s2s_auth", { ...claim, signature }),
          ErrorCode.S2S_AUTH_FAILED,
        );
        // Even with gamma's own challenge, a signature naming beta's server is refused by gamma.
        const again = await toC.call<{ challenge: string }>("s2s_hello", {
          receiver: c.host,
        });
        const forB = { ...claim, challenge: again.challenge };
        await refused(
          toC.call("s2s_auth", {
            ...forB,
            signature: await keysA.sign(signedText(forB)),
          }),
          ErrorCode.S2S_AUTH_FAILED,
        );
        // Naming gamma's server but a domain gamma does not host.
        const third = await toC.call<{ challenge: string }>("s2s_hello", {
          receiver: c.host,
        });
        const forC = { ...claim, challenge: third.challenge, receiver: c.host };
        await refused(
          toC.call("s2s_auth", {
            ...forC,
            signature: await keysA.sign(signedText(forC)),
          }),
          ErrorCode.S2S_WRONG_DESTINATION,
        );
        toC.close();
        // The original signature still works where it was meant to go.
        await toB.call("s2s_auth", { ...claim, signature });
        // Authenticated for alpha.test, it cannot deliver as someone of gamma.test.
        await refused(
          toB.call("s2s_deliver", {
            module: "messages",
            from: "mallory@gamma.test",
            to: ["bob@beta.test"],
            id: "x1",
            payload: {},
          }),
          ErrorCode.S2S_FROM_MISMATCH,
        );
        // Per recipient: an unknown module and an unknown user.
        const perRecipient = await toB.call<
          { recipients: { address: string; error?: number }[] }
        >("s2s_deliver", {
          module: "messages",
          from: "alice@alpha.test",
          to: ["nobody@beta.test", "bob@beta.test"],
          id: "direct-1",
          payload: { subject: "direct", body: "hi" },
        });
        assert.deepEqual(
          perRecipient.recipients.map((r) => [r.address, r.error]),
          [["nobody@beta.test", ErrorCode.NOT_FOUND], [
            "bob@beta.test",
            undefined,
          ]],
        );
        const noModule = await toB.call<{ recipients: { error?: number }[] }>(
          "s2s_deliver",
          {
            module: "nosuch",
            from: "alice@alpha.test",
            to: ["bob@beta.test"],
            id: "direct-2",
            payload: {},
          },
        );
        assert.equal(
          noModule.recipients[0].error,
          ErrorCode.MODULE_UNAVAILABLE,
        );
        toB.close();
        // Commands before authentication.
        const p3 = await peer(b);
        await refused(
          p3.call("s2s_deliver", {
            module: "messages",
            from: "alice@alpha.test",
            to: ["bob@beta.test"],
            id: "x",
            payload: {},
          }),
          ErrorCode.S2S_NOT_AUTHENTICATED,
        );
        p3.close();
        // A client session cannot use server-to-server commands at all.
        const client = await connect(b);
        clients.push(client);
        assert.equal(
          (await client.request("s2s_hello")).error,
          ErrorCode.UNKNOWN_COMMAND,
        );
        assert.ok(b.server!.stderr().includes("s2s_auth_refused"));
      },
    );

    await t.step(
      "the DNS check shows a correct and an incorrect set-up, as an admin sees it",
      async () => {
        // CA-issued certificates: the CLI pins the leaf's hash (production uses the system roots).
        const { certificateHash } = await import("../shared/pem.ts");
        const env = {
          AMTP_DATA: `${a.dir}/data`,
          AMTP_CLI_STATE: `${world.root}/cli-a.json`,
        };
        const loggedIn = await runCli([
          "login",
          "--admin",
          "admin",
          "--key",
          `${a.dir}/data/admin.key`,
          "--server",
          `127.0.0.1:${a.port}`,
          "--cert-hash",
          await certificateHash(a.certPem),
        ], env);
        assert.equal(loggedIn.code, 0, loggedIn.stderr);
        // Without the policy announced, the check says what to publish.
        const unannounced = await runCli(["dns"], env);
        assert.match(
          unannounced.stdout,
          /MISSING _amtp-policy\.alpha\.test\. IN TXT "v=AMTP-POLICY1; id=[0-9a-f]{16}; port=\d+"/,
        );
        await zone({}, ["alpha.test"]);
        const good = await runCli(["dns"], env);
        assert.equal(good.code, 0, good.stdout + good.stderr);
        assert.match(
          good.stdout,
          new RegExp(
            `ok\\s+alpha\\.test\\. IN TXT "amtp-servers=a\\.example\\.test:${a.port}"`,
          ),
        );
        assert.match(
          good.stdout,
          /ok\s+a\.example\.test\. IN TXT "amtp-dkim=v=DKIM1;h=sha256;k=ed25519;p=/,
        );
        assert.match(
          good.stdout,
          /ok\s+_amtp-policy\.alpha\.test\. IN TXT "v=AMTP-POLICY1; id=/,
        );
        assert.match(
          good.stdout,
          /ok\s+https:\/\/amtp-policy\.alpha\.test:\d+\/\.well-known\/amtp-policy\.json serves/,
        );
        assert.match(good.stdout, /DNS is set up correctly/);
        // A hosted domain whose record is missing, and gamma's server checking a wrong key.
        await clients[0].call("admin_add_domain", {
          admin_token: a.adminToken,
          domain: "unpublished.test",
        });
        const bad = await runCli(["dns"], env);
        assert.equal(bad.code, 1);
        assert.match(
          bad.stdout,
          /MISSING unpublished\.test\. IN TXT "amtp-servers=a\.example\.test:\d+"/,
        );
        assert.match(
          bad.stdout,
          /no amtp-servers record|publishes no amtp-servers/,
        );
        assert.match(bad.stdout, /DNS needs the changes marked above/);
        await zone({
          [c.host]: `amtp-dkim=${await world.keyRecord(a)}`,
          "gamma.test": `amtp-servers=${c.host}:${c.port + 1}`,
        });
        const cEnv = {
          AMTP_DATA: `${c.dir}/data`,
          AMTP_CLI_STATE: `${world.root}/cli-c.json`,
        };
        await runCli([
          "login",
          "--admin",
          "admin",
          "--key",
          `${c.dir}/data/admin.key`,
          "--server",
          `127.0.0.1:${c.port}`,
          "--cert-hash",
          await certificateHash(c.certPem),
        ], cEnv);
        const wrong = await runCli(["dns"], cEnv);
        assert.equal(wrong.code, 1);
        assert.match(wrong.stdout, /WRONG\s+gamma\.test\. IN TXT/);
        assert.match(wrong.stdout, /does not list c\.example\.test/);
        assert.match(
          wrong.stdout,
          /WRONG\s+c\.example\.test\. IN TXT "amtp-dkim=/,
        );
        assert.match(wrong.stdout, /published now: amtp-dkim=/);
      },
    );
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
