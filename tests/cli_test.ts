/**
 * The CLI as a new user drives it, against a real server process.
 */

import assert from "node:assert/strict";
import {
  cleanEnv,
  runCli,
  startServerProcess,
  taskArgs,
} from "../testing/process.ts";

Deno.test("cli: keygen, login, the admin life cycle, a user session, logout", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-cli-" });
  const server = await startServerProcess(cwd, { AMTP_PORT: "0" });
  const env = { AMTP_DATA: `${cwd}/data`, AMTP_CLI_STATE: `${cwd}/cli.json` };
  const cli = async (...args: string[]) => {
    const result = await runCli(args, env, cwd);
    return result;
  };
  const ok = async (...args: string[]) => {
    const result = await cli(...args);
    assert.equal(
      result.code,
      0,
      `amtp ${args.join(" ")}\n${result.stdout}\n${result.stderr}`,
    );
    return result.stdout;
  };
  try {
    const server1 = `127.0.0.1:${server.port}`;
    // A session file left readable by others is made owner-only at the next write.
    await Deno.writeTextFile(`${cwd}/cli.json`, "{}", { mode: 0o644 });
    await Deno.chmod(`${cwd}/cli.json`, 0o644);
    assert.match(
      await ok(
        "login",
        "--admin",
        "admin",
        "--key",
        "data/admin.key",
        "--server",
        server1,
      ),
      /logged in as the admin "admin" at 127\.0\.0\.1:\d+/,
    );
    assert.match(await ok("whoami"), /admin: admin/);
    assert.equal((await Deno.stat(`${cwd}/cli.json`)).mode! & 0o077, 0);
    // Keys go to the config folder, never the working folder.
    assert.match(await ok("keygen", "alice"), /keys\/alice\.key/);
    assert.equal(
      (await Deno.stat(`${cwd}/amtp-config/keys/alice.key`)).mode! & 0o077,
      0,
    );
    await assert.rejects(Deno.stat(`${cwd}/alice.key`));
    await ok("keygen", "--out", "bob", "--alg", "rsa");
    await ok("keygen", "--out", "ops");
    await ok("admin", "add-domain", "example.org", "--description", "home");
    await ok(
      "admin",
      "add-user",
      "alice@example.org",
      "--key",
      "alice.pub",
      "--name",
      "Alice",
    );
    await ok("admin", "add-user", "bob@example.org", "--key", "bob.pub");
    // A remote module's key, registered for one module version.
    assert.match(
      await ok("admin", "add-module-key", "notes", "1.2.0", "--key", "ops"),
      /notes/,
    );
    const moduleKeys = await ok("admin", "module-keys", "--name", "notes");
    assert.match(moduleKeys, /1\.2\.0/);
    const moduleKeyId = moduleKeys.match(/key_id:\s*(\S+)/)?.[1];
    assert.ok(moduleKeyId, moduleKeys);
    await ok("admin", "del-module-key", "notes", "1.2.0", moduleKeyId);
    await ok(
      "admin",
      "add-alias",
      "team@example.org",
      "--to",
      "alice@example.org,bob@example.org",
    );
    await ok(
      "admin",
      "set-catchall",
      "example.org",
      "--to",
      "alice@example.org",
    );
    await ok("admin", "add-admin", "ops", "--key", "ops.pub");
    const users = JSON.parse(await ok("admin", "users", "--json"));
    assert.deepEqual(users.users.map((u: { address: string }) => u.address), [
      "alice@example.org",
      "bob@example.org",
    ]);
    assert.match(await ok("admin", "aliases"), /team@example\.org/);
    assert.match(
      await ok("admin", "catchall", "example.org"),
      /alice@example\.org/,
    );
    assert.match(await ok("admin", "admins"), /name: ops/);
    assert.match(
      await ok("admin", "set-user", "bob@example.org", "--name", "Bob"),
      /name: Bob/,
    );
    assert.match(
      await ok(
        "admin",
        "set-alias",
        "team@example.org",
        "--to",
        "bob@example.org",
      ),
      /bob@example\.org/,
    );
    const loop = await cli(
      "admin",
      "add-alias",
      "x@example.org",
      "--to",
      "x@example.org",
    );
    assert.equal(loop.code, 1);
    assert.match(loop.stderr, /error 204 ALIAS_LOOP/);
    assert.match(await ok("admin", "sysinfo"), /uptime: /);
    assert.match(
      await ok("admin", "modules"),
      /name: example[\s\S]*state: running/,
    );
    assert.match(
      await ok("admin", "reload-module", "example", "1.0.0"),
      /state: running/,
    );
    assert.match(
      await ok("call", '{"command":"admin_get_domains"}'),
      /"name": "example.org"/,
    );

    // The user side, over WebSocket.
    assert.match(
      await ok(
        "login",
        "--user",
        "alice@example.org",
        "--key",
        "alice.key",
        "--ws",
      ),
      /logged in as alice@example\.org/,
    );
    assert.match(
      await ok("user", "userinfo", "bob@example.org", "--ws"),
      /name: Bob/,
    );
    await Deno.writeFile(
      `${cwd}/me.png`,
      new Uint8Array([137, 80, 78, 71, 1, 2, 3]),
    );
    await ok(
      "user",
      "profile",
      "--name",
      "Alice A.",
      "--photo",
      "me.png",
      "--photo-type",
      "image/png",
    );
    assert.match(await ok("user", "sessions"), /current: true/);
    assert.match(await ok("user", "serverinfo"), /address: alice@example\.org/);
    assert.match(
      await ok(
        "call",
        '{"command":"echo","module":"example","text":"hi there"}',
      ),
      /"caller": "alice@example.org"/,
    );

    // Deletes, then logout.
    await ok("admin", "del-alias", "team@example.org");
    await ok("admin", "del-user", "bob@example.org");
    await ok("admin", "del-admin", "ops");
    const notEmpty = await cli("admin", "del-domain", "example.org");
    assert.match(notEmpty.stderr, /DOMAIN_NOT_EMPTY/);
    await ok("admin", "del-domain", "example.org", "--force");
    await ok("logout");
    const after = await cli("admin", "domains");
    assert.notEqual(after.code, 0);
    assert.match(after.stderr, /not logged in/);
  } finally {
    await server.stop();
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("cli: the offline admin tool lets a locked-out operator back in", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-cli-" });
  const server = await startServerProcess(cwd, { AMTP_PORT: "0" });
  const env = { AMTP_DATA: `${cwd}/data`, AMTP_CLI_STATE: `${cwd}/cli.json` };
  try {
    await runCli(["keygen", "--out", `${cwd}/rescue`], env, cwd);
    const offline = async (...args: string[]) => {
      const output = await new Deno.Command(Deno.execPath(), {
        args: ["run", ...taskArgs("admin"), ...args],
        cwd,
        env: cleanEnv({ AMTP_DATA: `${cwd}/data` }),
        clearEnv: true,
        stdout: "piped",
        stderr: "piped",
      }).output();
      return {
        code: output.code,
        stdout: new TextDecoder().decode(output.stdout),
      };
    };
    const added = await offline("add-admin", "rescue", "--key", "rescue.pub");
    assert.equal(added.code, 0);
    assert.match((await offline("list-admins")).stdout, /rescue/);
    assert.equal((await offline("unblock", "--all")).code, 0);
    const login = await runCli(
      [
        "login",
        "--admin",
        "rescue",
        "--key",
        "rescue.key",
        "--server",
        `127.0.0.1:${server.port}`,
      ],
      env,
      cwd,
    );
    assert.equal(login.code, 0, login.stderr);
  } finally {
    await server.stop();
    await Deno.remove(cwd, { recursive: true });
  }
});
