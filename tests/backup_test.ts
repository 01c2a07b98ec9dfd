/**
 * Online backup and restore, as an operator runs them: `deno task admin
 * backup DIR` while 20 clients send mail to a running server; `deno task
 * admin restore DIR` into an empty folder; a server started there has every
 * message acknowledged before the backup began, whole, and serves logins
 * and mail. Damaged or too-new backups are refused with a message; the
 * server's own schedule writes and prunes backups.
 */

import assert from "node:assert/strict";
import {
  adminCaller,
  startTestServer,
  userMaker,
  waitFor,
} from "../testing/helpers.ts";
import { mailSession } from "../testing/mail.ts";
import { cleanEnv, taskArgs } from "../testing/process.ts";
import { MANIFEST, restoreBackup, takeBackup } from "../core/backup/mod.ts";

/** Run `deno task admin ...args` with `AMTP_DATA=dataDir`. */
async function admin(dataDir: string, ...args: string[]) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...taskArgs("admin"), ...args],
    env: cleanEnv({ AMTP_DATA: dataDir }),
    clearEnv: true,
  }).output();
  const text = new TextDecoder().decode(out.stdout) +
    new TextDecoder().decode(out.stderr);
  return { code: out.code, text };
}

interface Sent {
  from: string;
  id: string;
  body: string;
  ackedAt: number;
}

Deno.test("backup: taken while 20 clients send, restored into an empty folder, the server there has every message acknowledged before it began and serves logins and mail", async () => {
  const root = await Deno.makeTempDir({ prefix: "amtp-backup-" });
  const t = await startTestServer({ AMTP_DATA: `${root}/data` });
  let restored: Awaited<ReturnType<typeof startTestServer>> | undefined;
  try {
    const call = await adminCaller(await t.connect(), t.dataDir);
    await call("admin_add_domain", { domain: "example.org" });
    const user = userMaker(call);
    const addresses = Array.from(
      { length: 20 },
      (_, i) => `u${i}@example.org`,
    );
    const sessions = await Promise.all(
      addresses.map(async (address) =>
        await mailSession(await t.connect(), address, await user(address))
      ),
    );
    const sent: Sent[] = [];
    let stop = false;
    const load = sessions.map(async (session, i) => {
      for (let n = 0; !stop; n++) {
        const body = `message ${n} from ${session.address} ${"x".repeat(500)}`;
        const result = await session.call<{ id: string }>("send", {
          to: [addresses[(i + 1) % addresses.length]],
          subject: `n${n}`,
          body,
        });
        sent.push({
          from: session.address,
          id: result.id,
          body,
          ackedAt: performance.now(),
        });
      }
    });
    // Some mail first, then the backup while the load goes on.
    while (sent.length < 100) await new Promise((r) => setTimeout(r, 20));
    const began = performance.now();
    const before = sent.filter((s) => s.ackedAt < began);
    const backup = await admin(t.dataDir, "backup", `${root}/backup`);
    const ended = performance.now();
    assert.equal(backup.code, 0, backup.text);
    assert.match(backup.text, /private keys/);
    // The server kept serving while the backup ran.
    const during = sent.filter((s) => s.ackedAt > began && s.ackedAt < ended);
    assert.ok(during.length > 0, "no message was acknowledged during backup");
    stop = true;
    await Promise.all(load);
    await t.close();

    const verify = await admin(`${root}/x`, "verify-backup", `${root}/backup`);
    assert.equal(verify.code, 0, verify.text);
    const restore = await admin(
      `${root}/restored`,
      "restore",
      `${root}/backup`,
    );
    assert.equal(restore.code, 0, restore.text);
    const mode = (await Deno.stat(`${root}/restored/amtp.kv`)).mode!;
    assert.equal(mode & 0o077, 0);

    restored = await startTestServer({ AMTP_DATA: `${root}/restored` });
    const byUser = new Map<string, Awaited<ReturnType<typeof mailSession>>>();
    for (const address of addresses) {
      byUser.set(
        address,
        await mailSession(
          await restored.connect(),
          address,
          await user(address),
        ),
      );
    }
    // Every message acknowledged before the backup began is there, whole.
    for (const message of before) {
      const got = await byUser.get(message.from)!.call<{ body: string }>(
        "get",
        { id: message.id },
      );
      assert.equal(got.body, message.body);
    }
    // Nothing half-written: whatever the Sent folders list reads whole.
    let listed = 0;
    for (const [address, session] of byUser) {
      const box = await session.call<{ messages: { id: string }[] }>("list", {
        folder: "sent",
        limit: 200,
      });
      for (const summary of box.messages) {
        const got = await session.call<{ body: string }>("get", {
          id: summary.id,
        });
        assert.match(got.body, new RegExp(`^message \\d+ from ${address} `));
        listed++;
      }
    }
    assert.ok(listed >= before.length);
    // The restored server takes logins (above) and new mail.
    const fresh = await byUser.get("u0@example.org")!.call<
      { recipients: { status: string }[] }
    >("send", { to: ["u5@example.org"], subject: "after", body: "restored" });
    assert.equal(fresh.recipients[0].status, "delivered");
  } finally {
    await restored?.close();
    await t.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("backup: a damaged, unfinished or too-new backup and a non-empty target are refused with a message naming the problem", async () => {
  const root = await Deno.makeTempDir({ prefix: "amtp-backup-" });
  const t = await startTestServer({ AMTP_DATA: `${root}/data` });
  try {
    const taken = await admin(t.dataDir, "backup", `${root}/good`);
    assert.equal(taken.code, 0, taken.text);
    // A second backup into the same folder.
    const again = await admin(t.dataDir, "backup", `${root}/good`);
    assert.equal(again.code, 1);
    assert.match(again.text, /target_not_empty.*not empty/);
    // Restore over a data folder in use.
    const over = await admin(t.dataDir, "restore", `${root}/good`);
    assert.equal(over.code, 1);
    assert.match(over.text, /restore refused \(target_not_empty\)/);
    await Deno.stat(`${t.dataDir}/amtp.kv`);

    const copy = async (name: string) => {
      const tree = async (from: string, to: string) => {
        await Deno.mkdir(to, { recursive: true });
        for await (const e of Deno.readDir(from)) {
          if (e.isDirectory) await tree(`${from}/${e.name}`, `${to}/${e.name}`);
          else await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
        }
      };
      await tree(`${root}/good`, `${root}/${name}`);
      return `${root}/${name}`;
    };
    // One byte changed in a module's database.
    const damaged = await copy("damaged");
    const file = await Deno.open(`${damaged}/modules/messages.kv`, {
      read: true,
      write: true,
    });
    await file.seek(5000, Deno.SeekMode.Start);
    const byte = new Uint8Array(1);
    await file.read(byte);
    await file.seek(5000, Deno.SeekMode.Start);
    await file.write(new Uint8Array([byte[0] ^ 0xff]));
    file.close();
    let result = await admin(`${root}/r1`, "restore", damaged);
    assert.equal(result.code, 1);
    assert.match(
      result.text,
      /restore refused \(corrupt\): modules\/messages\.kv does not match the manifest.*damaged/,
    );
    await assert.rejects(() => Deno.stat(`${root}/r1/amtp.kv`));
    // A file gone.
    const missing = await copy("missing");
    await Deno.remove(`${missing}/server_key.json`);
    result = await admin(`${root}/r2`, "restore", missing);
    assert.match(result.text, /\(corrupt\): server_key\.json is missing/);
    // A symbolic link in place of a file (it could bring in any file here).
    const linked = await copy("linked");
    await Deno.remove(`${linked}/admin.pub`);
    await Deno.symlink(`${root}/good/admin.pub`, `${linked}/admin.pub`);
    result = await admin(`${root}/r6`, "restore", linked);
    assert.match(result.text, /\(corrupt\): admin\.pub .* not a plain file/);
    // No manifest: a backup that did not finish.
    const unfinished = await copy("unfinished");
    await Deno.remove(`${unfinished}/${MANIFEST}`);
    result = await admin(`${root}/r3`, "restore", unfinished);
    assert.match(result.text, /\(no_manifest\).*did not finish/);
    // From a newer server.
    const newer = await copy("newer");
    const manifest = JSON.parse(
      await Deno.readTextFile(`${newer}/${MANIFEST}`),
    );
    manifest.schema = 999;
    await Deno.writeTextFile(`${newer}/${MANIFEST}`, JSON.stringify(manifest));
    result = await admin(`${root}/r4`, "restore", newer);
    assert.equal(result.code, 1);
    assert.match(result.text, /\(too_new\).*schema 999.*knows up to/);
    // A manifest pointing outside the backup.
    manifest.schema = 1;
    manifest.files.push({ ...manifest.files[0], path: "../data/amtp.kv" });
    await Deno.writeTextFile(`${newer}/${MANIFEST}`, JSON.stringify(manifest));
    result = await admin(`${root}/r5`, "restore", newer);
    assert.match(result.text, /\(bad_manifest\).*outside the backup/);
  } finally {
    await t.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("backup: the server backs itself up on its schedule and keeps the newest N", async () => {
  const root = await Deno.makeTempDir({ prefix: "amtp-backup-" });
  const t = await startTestServer({
    AMTP_DATA: `${root}/data`,
    AMTP_BACKUP_DIR: `${root}/backups`,
    AMTP_BACKUP_KEEP: "2",
  }, { backupEveryMs: 1100 });
  let closed = false;
  try {
    const taken = () =>
      t.logs.filter((l) => l.includes("event=backup_taken")).length;
    while (taken() < 4) await new Promise((r) => setTimeout(r, 200));
    const metrics = await t.server.metrics.registry.text();
    // Stopped first: the schedule goes on, and a backup it prunes meanwhile
    // would vanish under the checks below.
    await t.close();
    closed = true;
    const names: string[] = [];
    for await (const e of Deno.readDir(`${root}/backups`)) names.push(e.name);
    assert.equal(names.length, 2, names.join(","));
    for (const name of names) {
      assert.match(name, /^\d{8}T\d{6}Z$/);
      const verify = await admin(
        `${root}/x`,
        "verify-backup",
        `${root}/backups/${name}`,
      );
      assert.equal(verify.code, 0, verify.text);
    }
    assert.ok(t.logs.some((l) => l.includes("event=backup_removed")));
    assert.match(metrics, /amtp_backups_total\{result="ok"\} [4-9]/);
  } finally {
    if (!closed) await t.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("backup: a scheduled backup that cannot be written is logged and counted, and the server goes on", async () => {
  const root = await Deno.makeTempDir({ prefix: "amtp-backup-" });
  await Deno.writeTextFile(`${root}/a-file`, "not a folder");
  const t = await startTestServer({
    AMTP_DATA: `${root}/data`,
    AMTP_BACKUP_DIR: `${root}/a-file/backups`,
  }, { backupEveryMs: 300 });
  try {
    await waitFor(
      () => t.logs.some((l) => l.includes("event=backup_failed")),
      10_000,
      "a failed backup",
    );
    const metrics = await t.server.metrics.registry.text();
    assert.match(metrics, /amtp_backups_total\{result="failed"\} [1-9]/);
    const client = await t.connect();
    assert.equal((await client.request("ping")).error, 0);
  } finally {
    await t.close();
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("backup: a core database outside the data folder (AMTP_KV) is backed up as core.kv and restored to the AMTP_KV of the new place", async () => {
  const root = await Deno.makeTempDir({ prefix: "amtp-backup-" });
  const t = await startTestServer({
    AMTP_DATA: `${root}/data`,
    AMTP_KV: `${root}/elsewhere/core.kv`,
  });
  try {
    const call = await adminCaller(await t.connect(), t.dataDir);
    await call("admin_add_domain", { domain: "outside.test" });
    const taken = await takeBackup(
      { dataDir: `${root}/data`, kvPath: `${root}/elsewhere/core.kv` },
      `${root}/backup`,
    );
    assert.equal(taken.core, "core.kv");
    assert.ok(!taken.files.some((f) => f.path.endsWith("amtp.kv")));
    await restoreBackup(`${root}/backup`, {
      dataDir: `${root}/restored`,
      kvPath: `${root}/restored-kv/amtp-core.kv`,
    });
    await assert.rejects(() => Deno.stat(`${root}/restored/core.kv`));
    const kv = await Deno.openKv(`${root}/restored-kv/amtp-core.kv`);
    try {
      const domains = await Array.fromAsync(kv.list({ prefix: [] }));
      assert.ok(
        domains.some((e) => JSON.stringify(e.key).includes("outside.test")),
      );
    } finally {
      kv.close();
    }
  } finally {
    await t.close();
    await Deno.remove(root, { recursive: true });
  }
});
