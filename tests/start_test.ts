/**
 * The server as a user starts it: a real process with no configuration file,
 * reached by the CLI over WebTransport and WebSocket, stopped by a signal.
 */

import assert from "node:assert/strict";
import {
  cleanEnv,
  runCli,
  startServerProcess,
  taskArgs,
} from "../testing/process.ts";

Deno.test("start: a fresh folder serves, the CLI gets info both ways, SIGTERM stops cleanly", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-start-" });
  try {
    // No AMTP_* variable but the port (0 = a free one, so parallel runs cannot clash).
    const server = await startServerProcess(cwd, { AMTP_PORT: "0" });
    const out = server.stdout();
    const hash = out.match(/certificate sha256: ([0-9a-f]{64})/)?.[1];
    assert.ok(hash, out);
    assert.match(
      out,
      /first admin "admin" created; private key: \.\/data\/admin\.key/,
    );
    const keyInfo = await Deno.stat(`${cwd}/data/admin.key`);
    assert.equal(
      keyInfo.mode! & 0o077,
      0,
      "admin.key readable by its owner only",
    );
    const env = { AMTP_DATA: `${cwd}/data`, AMTP_CLI_STATE: `${cwd}/cli.json` };
    const wt = await runCli(
      ["info", "--server", `127.0.0.1:${server.port}`],
      env,
    );
    assert.equal(wt.code, 0, wt.stderr);
    assert.match(wt.stdout, /app_name: AMTP Deno Server/);
    assert.match(wt.stdout, new RegExp(`certificate_sha256: ${hash}`));
    const ws = await runCli([
      "info",
      "--server",
      `127.0.0.1:${server.port}`,
      "--ws",
      "--json",
    ], env);
    assert.equal(ws.code, 0, ws.stderr);
    assert.equal(JSON.parse(ws.stdout).certificate_sha256, hash);
    // Pinning a wrong hash fails.
    const wrong = await runCli(
      [
        "info",
        "--server",
        `127.0.0.1:${server.port}`,
        "--cert-hash",
        "00".repeat(32),
      ],
      { ...env, AMTP_DATA: `${cwd}/nowhere` },
    );
    assert.notEqual(wrong.code, 0);
    // With the start task's permissions, a module can move to a killable process.
    const cliEnv = { ...env, AMTP_CLI_STATE: `${cwd}/admin.json` };
    const admin = await runCli(
      [
        "login",
        "--admin",
        "admin",
        "--key",
        "data/admin.key",
        "--server",
        `127.0.0.1:${server.port}`,
      ],
      cliEnv,
      cwd,
    );
    assert.equal(admin.code, 0, admin.stderr);
    const moved = await runCli(
      ["admin", "module-isolation", "example", "1.0.0", "process"],
      cliEnv,
      cwd,
    );
    assert.equal(moved.code, 0, moved.stderr);
    assert.match(moved.stdout, /isolation: process[\s\S]*|state: running/);
    assert.match(moved.stdout, /state: running/);
    const code = await server.stop("SIGTERM");
    assert.equal(code, 0);
    assert.match(server.stderr(), /event=shutdown/);
    // A second start reuses the certificate and does not create another admin.
    const again = await startServerProcess(cwd, { AMTP_PORT: "0" });
    assert.match(again.stdout(), new RegExp(hash));
    assert.doesNotMatch(again.stdout(), /first admin/);
    assert.equal(await again.stop("SIGINT"), 0);
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("start: an invalid variable stops the start, naming it", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-start-" });
  try {
    for (
      const [name, value] of [["AMTP_PORT", "abc"], ["AMTP_LOG_LEVEL", "loud"]]
    ) {
      const output = await new Deno.Command(Deno.execPath(), {
        args: ["run", ...taskArgs("start")],
        cwd,
        env: cleanEnv({ [name]: value }),
        clearEnv: true,
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(output.code, 2);
      const stderr = new TextDecoder().decode(output.stderr);
      assert.match(stderr, new RegExp(`configuration error: ${name}: `));
    }
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("start: the data folder is the server user's alone, whatever the umask, old files included", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-modes-" });
  const before = Deno.umask(0o022);
  try {
    // An install from before: a world-readable folder and file.
    await Deno.mkdir(`${cwd}/data/old`, { recursive: true, mode: 0o755 });
    await Deno.writeTextFile(`${cwd}/data/old/notes.json`, "{}", {
      mode: 0o644,
    });
    await Deno.chmod(`${cwd}/data`, 0o755);
    const server = await startServerProcess(cwd, { AMTP_PORT: "0" });
    try {
      const loose: string[] = [];
      const walk = async (path: string) => {
        const info = await Deno.lstat(path);
        if ((info.mode! & 0o077) !== 0) {
          loose.push(`${path} ${(info.mode! & 0o777).toString(8)}`);
        }
        if (info.isDirectory) {
          for await (const e of Deno.readDir(path)) {
            await walk(`${path}/${e.name}`);
          }
        }
      };
      await walk(`${cwd}/data`);
      assert.deepEqual(loose, []);
      // The files that matter are there to be checked.
      for (
        const file of ["amtp.kv", "server_key.json", "admin.key"]
      ) {
        await Deno.stat(`${cwd}/data/${file}`);
      }
    } finally {
      await server.stop();
    }
  } finally {
    Deno.umask(before);
    await Deno.remove(cwd, { recursive: true });
  }
});
