/**
 * End-to-end encryption with the CLI against a real server process, and the
 * attacks of an active server operator: a ghost device, a forged device list,
 * a removed device list (to make a sender fall back to plaintext), a key
 * change that must stay flagged until confirmed.
 *
 * The operator can write any record of a profile; these tests write them
 * through the user's own session token, which has the same effect on what
 * other users read.
 */

import assert from "node:assert/strict";
import {
  generateDeviceKeys,
  generateMasterKeys,
  listed,
  pendingRecord,
  signDeviceList,
} from "../client/e2e.ts";
import { AmtpClient } from "../client/mod.ts";
import { KvStorage } from "../workers/sdk/storage.ts";
import {
  recordOf,
  type StoredRecord,
} from "../modules/messages/1.0.0/mailbox.ts";
import { freePort } from "../testing/dnsmasq.ts";
import { runCli, startServerProcess } from "../testing/process.ts";

Deno.test("cli e2e: encrypt by default, ghost devices ignored, forged lists and key changes block until confirmed, no silent plaintext", async (t) => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-e2ecli-" });
  const port = freePort();
  let server = await startServerProcess(cwd, { AMTP_PORT: String(port) });
  const as = (who: string) => ({
    AMTP_DATA: `${cwd}/data`,
    AMTP_CLI_STATE: `${cwd}/${who}/state.json`,
  });
  const run = (who: string, ...args: string[]) => runCli(args, as(who), cwd);
  const ok = async (who: string, ...args: string[]) => {
    const r = await run(who, ...args);
    assert.equal(r.code, 0, `amtp ${args.join(" ")}\n${r.stdout}\n${r.stderr}`);
    return r.stdout;
  };
  const fails = async (who: string, ...args: string[]) => {
    const r = await run(who, ...args);
    assert.equal(r.code, 1, `amtp ${args.join(" ")}\n${r.stdout}\n${r.stderr}`);
    return r.stderr;
  };
  const idOf = (out: string) => out.match(/message ([0-9a-f]+)/)![1];
  // "The operator" edits profiles; here through the user's own session.
  const hash = server.stdout().match(/certificate sha256: ([0-9a-f]{64})/)![1];
  const state = async (who: string) =>
    JSON.parse(await Deno.readTextFile(`${cwd}/${who}/state.json`));
  const asServer = async (who: string) => {
    const { user_token } = await state(who);
    const client = await AmtpClient.connect({
      url: `https://127.0.0.1:${port}/amtp`,
      certHash: hash,
      keepAliveMs: 0,
    });
    return {
      client,
      call: (command: string, params: Record<string, unknown> = {}) =>
        client.call<Record<string, unknown>>(command, {
          user_token,
          ...params,
        }),
    };
  };
  try {
    const where = `127.0.0.1:${port}`;
    await ok(
      "admin",
      "login",
      "--admin",
      "admin",
      "--key",
      "data/admin.key",
      "--server",
      where,
    );
    await ok("admin", "admin", "add-domain", "example.org");
    for (const name of ["alice", "bob", "carol"]) {
      await Deno.mkdir(`${cwd}/${name}`);
      await ok("admin", "keygen", "--out", `${name}/login`);
      await ok(
        "admin",
        "admin",
        "add-user",
        `${name}@example.org`,
        "--key",
        `${name}/login.pub`,
      );
      await ok(
        name,
        "login",
        "--user",
        `${name}@example.org`,
        "--key",
        `${name}/login.key`,
        "--server",
        where,
      );
    }
    const send = (
      who: string,
      to: string,
      subject: string,
      ...more: string[]
    ) =>
      run(
        who,
        "send",
        "--to",
        to,
        "--subject",
        subject,
        "--body",
        "b",
        ...more,
      );

    await t.step(
      "a contact without keys gets plain mail, said before it is sent; --encrypt refuses it",
      async () => {
        assert.match(
          await ok("alice", "device", "init", "--label", "laptop"),
          /created and published in your device list \(#1\)/,
        );
        const plain = await send("alice", "bob@example.org", "hello");
        assert.equal(plain.code, 0, plain.stderr);
        assert.match(
          plain.stderr,
          /NOT ENCRYPTED: bob@example\.org has no verified encryption keys/,
        );
        assert.match(
          await fails(
            "alice",
            "send",
            "--to",
            "bob@example.org",
            "--body",
            "x",
            "--encrypt",
          ),
          /NOT SENT: .*--encrypt requires encryption/,
        );
      },
    );

    await t.step(
      "a ghost device the server adds is not sealed to, and the sender is told",
      async () => {
        await ok("bob", "device", "init", "--label", "bob-laptop");
        const server = await asServer("bob");
        const ghost = await generateDeviceKeys("ghost");
        await server.call("user_add_public_key", pendingRecord(ghost));
        server.client.close();
        const out = await ok(
          "alice",
          "send",
          "--to",
          "bob@example.org",
          "--subject",
          "Vault",
          "--body",
          "code 4711",
        );
        assert.match(
          out,
          /note: ignoring 1 device\(s\) of bob@example\.org not signed by its master key \(ghost\)/,
        );
        assert.match(out, /encrypted end to end for 2 devices/);
        const read = await ok("bob", "read", idOf(out));
        assert.match(read, /Subject: Vault/);
        assert.match(read, /code 4711/);
        assert.match(read, /master key seen for the first time/);
      },
    );

    await t.step(
      "a device list forged by the server (its own master key) blocks sending until the user confirms",
      async () => {
        const server = await asServer("bob");
        const fake = await generateMasterKeys();
        const ghost = await generateDeviceKeys("ghost2");
        const { key_id } = await server.call(
          "user_add_public_key",
          await signDeviceList(fake, {
            address: "bob@example.org",
            counter: 99,
            devices: [listed(ghost)],
          }),
        ) as { key_id: string };
        const blocked = await fails(
          "alice",
          "send",
          "--to",
          "bob@example.org",
          "--body",
          "x",
        );
        assert.match(
          blocked,
          /NOT SENT: .*bob@example\.org has a NEW master key/,
        );
        // Again: still blocked (the change stays flagged).
        assert.match(
          await fails(
            "alice",
            "send",
            "--to",
            "bob@example.org",
            "--body",
            "x",
          ),
          /NEW master key/,
        );
        // The forged list withdrawn, bob's real list is the pinned one again.
        await server.call("user_del_public_key", { key_id });
        server.client.close();
        assert.match(
          await ok("alice", "send", "--to", "bob@example.org", "--body", "x"),
          /encrypted end to end for 2 devices/,
        );
      },
    );

    await t.step(
      "once a contact had keys, no plaintext leaves without consent",
      async () => {
        const server = await asServer("bob");
        const profile = await server.call("user_userinfo", {
          address: "bob@example.org",
        }) as {
          public_keys: { key_id: string; algorithm: string }[];
        };
        for (const k of profile.public_keys) {
          await server.call("user_del_public_key", { key_id: k.key_id });
        }
        server.client.close();
        assert.match(
          await fails(
            "alice",
            "send",
            "--to",
            "bob@example.org",
            "--body",
            "secret",
          ),
          /NOT SENT: .*had encryption keys before; to send it in clear anyway, add --plain/,
        );
        const consented = await ok(
          "alice",
          "send",
          "--to",
          "bob@example.org",
          "--body",
          "not secret",
          "--plain",
        );
        assert.match(consented, /NOT ENCRYPTED: --plain was given/);
      },
    );

    await t.step(
      "a new master key of a contact stays flagged until confirmed with the safety code",
      async () => {
        await ok("bob", "device", "init", "--label", "bob-new", "--new-master");
        assert.match(
          await fails(
            "alice",
            "send",
            "--to",
            "bob@example.org",
            "--body",
            "x",
          ),
          /bob@example\.org has a NEW master key: compare the safety code \(amtp verify bob@example\.org\)/,
        );
        const shown = await ok("alice", "verify", "bob@example.org");
        const code = shown.match(
          /safety code of you and bob@example\.org: ([\d ]+)/,
        )![1].trim();
        // Bob sees the same code on his side.
        assert.match(
          await ok("bob", "verify", "alice@example.org"),
          new RegExp(code),
        );
        const wrong = await run(
          "alice",
          "trust",
          "bob@example.org",
          "--code",
          "00000 00000 00000 00000 00000 00000",
        );
        assert.equal(wrong.code, 1);
        assert.match(wrong.stderr, /does not match/);
        assert.match(
          await ok("alice", "trust", "bob@example.org", "--code", code),
          /confirmed the master key of bob@example\.org .*safety code matched/,
        );
        const out = await ok(
          "alice",
          "send",
          "--to",
          "bob@example.org",
          "--subject",
          "after",
          "--body",
          "y",
        );
        assert.match(out, /encrypted end to end/);
        // The reader side: alice's master key changes; bob is told on every read until he confirms.
        await ok(
          "alice",
          "device",
          "init",
          "--label",
          "alice-new",
          "--new-master",
        );
        const again = idOf(
          await ok(
            "alice",
            "send",
            "--to",
            "bob@example.org",
            "--subject",
            "new key",
            "--body",
            "z",
          ),
        );
        for (let i = 0; i < 2; i++) {
          assert.match(
            await ok("bob", "read", again),
            /alice@example\.org now has a NEW master key: compare the safety code/,
          );
        }
        assert.match(
          await fails(
            "bob",
            "send",
            "--to",
            "alice@example.org",
            "--body",
            "x",
          ),
          /alice@example\.org has a NEW master key/,
        );
        await ok("bob", "trust", "alice@example.org");
        assert.match(
          await ok("bob", "read", again),
          /master key confirmed by you/,
        );
      },
    );

    await t.step(
      "a Bcc recipient gets an envelope of its own: no other recipient learns of it",
      async () => {
        await ok("carol", "device", "init", "--label", "carol-laptop");
        const out = await ok(
          "alice",
          "send",
          "--to",
          "bob@example.org",
          "--bcc",
          "carol@example.org",
          "--subject",
          "Board",
          "--body",
          "the plan",
        );
        assert.match(out, /and 1 Bcc envelope/);
        const server = await asServer("bob");
        const list = await server.client.call<{ messages: { id: string }[] }>(
          "list",
          { module: "messages", user_token: (await state("bob")).user_token },
        );
        const bobCopy = await server.client.call<{ body: Uint8Array }>("get", {
          module: "messages",
          user_token: (await state("bob")).user_token,
          id: list.messages[0].id,
        });
        server.client.close();
        assert.ok(
          !new TextDecoder("latin1").decode(bobCopy.body).includes("carol"),
          "bob's envelope names carol",
        );
        const bobRead = await ok("bob", "read", list.messages[0].id);
        assert.match(bobRead, /Subject: Board/);
        assert.doesNotMatch(bobRead, /carol|Bcc/);
        assert.doesNotMatch(bobRead, /WARNING/);
        const carolInbox = await ok("carol", "inbox");
        const carolId = carolInbox.match(/E ([0-9a-f-]+) /)![1];
        const carolRead = await ok("carol", "read", carolId);
        assert.match(carolRead, /Bcc: {5}carol@example\.org/);
        assert.match(carolRead, /the plan/);
        assert.doesNotMatch(carolRead, /WARNING/);
      },
    );

    await t.step(
      "what the server changes in a copy (To, date, thread) or replays is pointed out",
      async () => {
        const first = idOf(
          await ok(
            "alice",
            "send",
            "--to",
            "bob@example.org",
            "--subject",
            "Original",
            "--body",
            "one",
          ),
        );
        const other = idOf(
          await ok(
            "alice",
            "send",
            "--to",
            "bob@example.org",
            "--subject",
            "Other",
            "--body",
            "two",
          ),
        );
        assert.doesNotMatch(await ok("bob", "read", first), /WARNING/);
        // The operator edits bob's mailbox while the server is down.
        await server.stop();
        const kv = await Deno.openKv(`${cwd}/data/modules/messages.kv`);
        const storage = new KvStorage(kv, "messages", 1 << 30);
        const key = ["msg", "bob@example.org", first];
        // Written whole (the layout before 2026-11-28, still read).
        const record = recordOf((await storage.get<StoredRecord>(key))!);
        await storage.set(key, {
          ...record,
          to: ["bob@example.org", "mallory@example.org"],
          date: new Date("2020-01-01T00:00:00Z"),
          in_reply_to: other,
        });
        await storage.set(["msg", "bob@example.org", "f".repeat(24)], {
          ...record,
          id: "f".repeat(24),
        });
        kv.close();
        server = await startServerProcess(cwd, { AMTP_PORT: String(port) });
        const changed = await ok("bob", "read", first);
        assert.match(
          changed,
          /WARNING: the server shows To bob@example\.org, mallory@example\.org/,
        );
        assert.match(changed, /WARNING: the server dates it 2020-01-01/);
        assert.match(
          changed,
          /WARNING: the server threads it under .*, the sender signed a reply to nothing/,
        );
        // What the sender signed is what is shown.
        assert.match(changed, /To: {6}bob@example\.org\n/);
        assert.match(
          await ok("bob", "read", "f".repeat(24)),
          new RegExp(
            `WARNING: the same signed message arrived before as ${first}: this copy is a replay`,
          ),
        );
      },
    );

    await t.step(
      "a long transfer shows a progress bar both ways, on the transfer lane, and arrives byte for byte",
      async () => {
        const file = `${cwd}/big.bin`;
        const data = new Uint8Array(2 * 1024 * 1024 + 1234);
        for (let at = 0; at < data.byteLength; at += 65536) {
          crypto.getRandomValues(data.subarray(at, at + 65536));
        }
        await Deno.writeFile(file, data);
        const sent = await send(
          "alice",
          "bob@example.org",
          "Big file",
          "--attach",
          file,
        );
        assert.equal(sent.code, 0, sent.stderr);
        assert.match(
          sent.stderr,
          /\rupload \S+\.bin \[#{30}\] 100% 2\.0\/2\.0 MiB\n/,
        );
        const read = await run(
          "bob",
          "read",
          idOf(sent.stdout),
          "--save",
          `${cwd}/saved`,
        );
        assert.equal(read.code, 0, read.stderr);
        assert.match(read.stderr, /\rdownload big\.bin \[#+\.*\] +\d+%/);
        assert.match(read.stderr, /100% 2\.0\/2\.0 MiB\n/);
        assert.deepEqual(await Deno.readFile(`${cwd}/saved/big.bin`), data);
      },
    );
  } finally {
    await server.stop();
    await Deno.remove(cwd, { recursive: true });
  }
});
