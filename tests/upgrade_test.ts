/**
 * Upgrades: a data folder written by the previous release
 * (`tests/fixtures/data-0.1.0`, made by `testing/upgrade_fixture.ts` with
 * that release's code) starts on this server with its mail; data written by
 * a newer server is refused, untouched; `deno task admin migrate --dry-run`
 * says what would change.
 */

import assert from "node:assert/strict";
import { APP_VERSION } from "../shared/version.ts";
import { MIGRATIONS } from "../kv/migrations.ts";
import { openStore } from "../kv/mod.ts";
import { DataTooNewError } from "../kv/migrations.ts";
import {
  adminCaller,
  bootstrapKey,
  startTestServer,
} from "../testing/helpers.ts";
import { mailSession } from "../testing/mail.ts";
import { cleanEnv, taskArgs } from "../testing/process.ts";
import { FIXTURE_KEY, FIXTURE_MESSAGE } from "../testing/upgrade_fixture.ts";

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

/** Copy a folder tree. */
async function copyTree(from: string, to: string): Promise<void> {
  await Deno.mkdir(to, { recursive: true });
  for await (const e of Deno.readDir(from)) {
    if (e.isDirectory) await copyTree(`${from}/${e.name}`, `${to}/${e.name}`);
    else await Deno.copyFile(`${from}/${e.name}`, `${to}/${e.name}`);
  }
}

const FIXTURE = new URL("./fixtures/data-0.1.0", import.meta.url).pathname;

Deno.test("upgrades: the data folder of release 0.1.0 starts on this server with its accounts and mail, and records this server as its writer", async () => {
  const root = await Deno.makeTempDir({ prefix: "amtp-upgrade-" });
  const data = `${root}/data`;
  await copyTree(FIXTURE, data);
  await Deno.rename(`${data}/${FIXTURE_KEY}`, `${data}/admin.key`);
  const dry = await admin(data, "migrate", "--dry-run");
  assert.equal(dry.code, 0, dry.text);
  assert.match(dry.text, /last written by server \(not recorded\)/);
  const t = await startTestServer({ AMTP_DATA: data });
  try {
    const key = await bootstrapKey(data);
    const call = await adminCaller(await t.connect(), data);
    const users = await call("admin_get_users", {});
    assert.match(JSON.stringify(users), /alice@example\.org/);
    const bob = await mailSession(await t.connect(), "bob@example.org", key);
    const inbox = await bob.call<
      { messages: { id: string; subject: string }[] }
    >(
      "list",
      { folder: "inbox" },
    );
    assert.equal(inbox.messages.length, 1);
    assert.equal(inbox.messages[0].subject, FIXTURE_MESSAGE.subject);
    const full = await bob.call<{ body: string }>("get", {
      id: inbox.messages[0].id,
    });
    assert.equal(full.body, FIXTURE_MESSAGE.body);
    // And it takes new mail.
    const alice = await mailSession(
      await t.connect(),
      "alice@example.org",
      key,
    );
    await alice.call("send", {
      to: ["bob@example.org"],
      subject: "new",
      body: "b",
    });
  } finally {
    await t.close();
  }
  const kv = await Deno.openKv(`${data}/amtp.kv`);
  assert.equal((await kv.get(["meta", "server_version"])).value, APP_VERSION);
  assert.equal(
    (await kv.get(["meta", "schema"])).value,
    MIGRATIONS.at(-1)!.version,
  );
  kv.close();
  await Deno.remove(root, { recursive: true });
});

Deno.test("upgrades: data written by a newer server is refused at start, untouched; migrate --dry-run says what would change", async () => {
  const root = await Deno.makeTempDir({ prefix: "amtp-upgrade-" });
  try {
    const store = await openStore(`${root}/data/amtp.kv`, {
      serverVersion: "99.0.0",
    });
    store.close();
    await assert.rejects(
      () => startTestServer({ AMTP_DATA: `${root}/data` }),
      (error: Error) =>
        error instanceof DataTooNewError &&
        /written by server 99\.0\.0, newer than this one/.test(error.message),
    );
    const check = await Deno.openKv(`${root}/data/amtp.kv`);
    assert.equal(
      (await check.get(["meta", "server_version"])).value,
      "99.0.0",
    );
    // An older schema: the dry run lists the migrations and changes nothing.
    await check.set(["meta", "schema"], 1);
    await check.set(["meta", "server_version"], "0.0.9");
    check.close();
    const dry = await admin(`${root}/data`, "migrate", "--dry-run");
    assert.equal(dry.code, 0, dry.text);
    assert.match(dry.text, /data: schema 1, last written by server 0\.0\.9/);
    const last = MIGRATIONS.at(-1)!.version;
    for (let v = 2; v <= last; v++) {
      assert.match(dry.text, new RegExp(`would run migration ${v}: `));
    }
    const after = await Deno.openKv(`${root}/data/amtp.kv`);
    assert.equal((await after.get(["meta", "schema"])).value, 1);
    after.close();
    const run = await admin(`${root}/data`, "migrate");
    assert.match(
      run.text,
      new RegExp(
        `running migration ${last}: [\\s\\S]*data now at schema ${last}`,
      ),
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
