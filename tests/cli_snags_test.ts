/**
 * The snags a newcomer hit with the CLI (issue 14), each run as a user runs
 * it: the CLI as a subprocess against real servers.
 */

import assert from "node:assert/strict";
import dgram from "node:dgram";
import { COMMANDS } from "../client/cli.ts";
import { GLOBAL_FLAGS } from "../client/cli_args.ts";
import { subcommandFlags } from "../client/admin_cli.ts";
import { chainPem, createCertificate } from "../core/tls/cert.ts";
import { freePort, startDns } from "../testing/dnsmasq.ts";
import {
  cleanEnv,
  cliEnv,
  runCli,
  startServerProcess,
  taskArgs,
} from "../testing/process.ts";
import { startTestServer } from "../testing/helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;

Deno.test("cli snags: the local server is found without --server (data folder, or AMTP_PORT in .env); errors name address and transport", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-snag-" });
  const server = await startServerProcess(cwd, { AMTP_PORT: "0" });
  try {
    // The start banner's hint names the port when it is not 4433.
    assert.match(
      server.stdout(),
      new RegExp(`log in with: .* --server localhost:${server.port}`),
    );
    // A fresh session file, no --server: found from ./data/listening.json.
    const env = { AMTP_CLI_STATE: `${cwd}/fresh.json` };
    const info = await runCli(["info"], env, cwd);
    assert.equal(info.code, 0, info.stderr);
    assert.match(info.stdout, /app_name: AMTP Deno Server/);
    const who = await runCli(["whoami"], env, cwd);
    assert.match(
      who.stdout,
      new RegExp(`server: localhost:${server.port} \\(the local server`),
    );
    // Elsewhere, with only AMTP_PORT in a .env file.
    const other = await Deno.makeTempDir({ prefix: "amtp-snag-env-" });
    await Deno.writeTextFile(`${other}/.env`, `AMTP_PORT=${server.port}\n`);
    const hash = server.stdout().match(/sha256: ([0-9a-f]{64})/)![1];
    const viaEnv = await runCli(
      ["info", "--cert-hash", hash, "--json"],
      { AMTP_CLI_STATE: `${other}/s.json` },
      other,
    );
    assert.equal(viaEnv.code, 0, viaEnv.stderr);
    assert.equal(JSON.parse(viaEnv.stdout).certificate_sha256, hash);
    await Deno.remove(other, { recursive: true });
    // Nothing listens: the error says where and how it tried.
    const closed = freePort();
    const ws = await runCli(
      ["info", "--server", `127.0.0.1:${closed}`, "--ws"],
      env,
      cwd,
    );
    assert.equal(ws.code, 1);
    assert.match(
      ws.stderr,
      new RegExp(
        `cannot reach 127\\.0\\.0\\.1:${closed} over WebSocket \\(TLS over TCP\\): connection refused`,
      ),
    );
    const wt = await runCli(
      ["info", "--server", `127.0.0.1:${closed}`, "--timeout", "1"],
      env,
      cwd,
    );
    assert.equal(wt.code, 1);
    assert.match(
      wt.stderr,
      new RegExp(
        `cannot reach 127\\.0\\.0\\.1:${closed} over WebTransport \\(QUIC over UDP\\): no answer within 1 s`,
      ),
    );
  } finally {
    await server.stop();
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("cli snags: .env is read without a warning, and the environment wins over it", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-snag-" });
  try {
    const bare = await startServerProcess(cwd, { AMTP_PORT: "0" });
    await bare.stop();
    assert.doesNotMatch(bare.stderr(), /env-file|not found/);
    await Deno.writeTextFile(
      `${cwd}/.env`,
      "# a comment\nAMTP_HOSTNAME=from-dotenv.test\nAMTP_LOG_LEVEL=loud\n",
    );
    // The environment's level wins over the file's invalid one.
    const server = await startServerProcess(cwd, {
      AMTP_PORT: "0",
      AMTP_LOG_LEVEL: "info",
    });
    try {
      const info = await runCli(
        ["info", "--json"],
        { AMTP_CLI_STATE: `${cwd}/s.json` },
        cwd,
      );
      assert.equal(info.code, 0, info.stderr);
      assert.equal(JSON.parse(info.stdout).hostname, "from-dotenv.test");
    } finally {
      await server.stop();
    }
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("cli snags: help lists every flag the CLI reads; amtp admin lists each subcommand once and exits 0; an unknown flag is refused", async () => {
  // Every flag the code reads is declared, so it is in --help and accepted.
  const declared = new Set([
    ...Object.keys(GLOBAL_FLAGS),
    ...Object.values(COMMANDS).flatMap((c) => [
      ...Object.keys(c.flags ?? {}),
      ...Object.values(c.subcommands ?? {}).flatMap((s) =>
        Object.keys(subcommandFlags(s))
      ),
    ]),
  ]);
  for await (const entry of Deno.readDir(`${ROOT}client`)) {
    if (!entry.name.endsWith(".ts")) continue;
    const code = await Deno.readTextFile(`${ROOT}client/${entry.name}`);
    for (const m of code.matchAll(/flags\.(?:get|has)\("([a-z-]+)"\)/g)) {
      assert.ok(
        declared.has(m[1]),
        `--${m[1]} (${entry.name}) is not declared`,
      );
    }
  }
  const env = { AMTP_CLI_STATE: `${await Deno.makeTempDir()}/s.json` };
  const send = await runCli(["send", "--help"], env);
  assert.equal(send.code, 0);
  for (
    const flag of [
      "--reply-to",
      "--client-id",
      "--body-file",
      "--plain",
      "--encrypt",
    ]
  ) {
    assert.ok(send.stdout.includes(flag), `send --help lacks ${flag}`);
  }
  const watch = await runCli(["watch", "--help"], env);
  for (const flag of ["--count", "--quiet", "--give-up"]) {
    assert.ok(watch.stdout.includes(flag), `watch --help lacks ${flag}`);
  }
  const inbox = await runCli(["help", "inbox"], env);
  for (const flag of ["--limit", "--cursor", "--unseen", "--folder"]) {
    assert.ok(inbox.stdout.includes(flag), `inbox help lacks ${flag}`);
  }
  const keygen = await runCli(["keygen", "--help"], env);
  assert.match(
    keygen.stdout,
    /--alg ALG +ed25519 \(default: signs\), x25519 or rsa/,
  );
  const admin = await runCli(["admin"], env);
  assert.equal(admin.code, 0, admin.stderr);
  const names = [...admin.stdout.matchAll(/^ {2}amtp admin (\S+)/gm)].map((m) =>
    m[1]
  );
  assert.ok(names.includes("add-user"));
  assert.equal(new Set(names).size, names.length, "a subcommand listed twice");
  for (const line of admin.stdout.split("\n")) {
    const words = line.trim().split(/\s+/);
    assert.ok(
      !(words[0] === "amtp" && words[2] && words[2] === words[3]),
      `a name repeated: ${line}`,
    );
  }
  const bad = await runCli(["send", "--to", "a@b.c", "--bodyfile", "x"], env);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /unknown flag --bodyfile for amtp send/);
  const all = await runCli(["help"], env);
  assert.equal(all.code, 0);
  for (const name of Object.keys(COMMANDS)) {
    assert.ok(all.stdout.includes(`amtp ${name}`), `help lacks ${name}`);
  }
});

Deno.test("cli snags: device init works as the README writes it (no label, no --allow-sys)", async () => {
  const t = await startTestServer();
  const dir = await Deno.makeTempDir({ prefix: "amtp-snag-" });
  try {
    const env = { AMTP_CLI_STATE: `${dir}/s.json`, AMTP_DATA: t.dataDir };
    const server = ["--server", `127.0.0.1:${t.server.port}`];
    const ok = async (...args: string[]) => {
      const r = await runCli(args, env, dir);
      assert.equal(r.code, 0, `${args.join(" ")}\n${r.stdout}${r.stderr}`);
      return r.stdout;
    };
    await ok(
      "login",
      "--admin",
      "admin",
      "--key",
      `${t.dataDir}/admin.key`,
      ...server,
    );
    await ok("admin", "add-domain", "example.org");
    await ok("keygen", "carol");
    await ok("admin", "add-user", "carol@example.org", "--key", "carol");
    await ok("login", "--user", "carol@example.org", "--key", "carol");
    assert.match(await ok("device", "init"), /published in your device list/);
    assert.match(await ok("device", "list"), /device +\(this device\)/);
    // Nothing was written to the working folder.
    assert.deepEqual(
      [...Deno.readDirSync(dir)].map((e) => e.name).sort(),
      ["amtp-config", "device-carol@example.org.json", "s.json"].sort(),
    );
  } finally {
    await t.close();
    await Deno.remove(dir, { recursive: true });
  }
});

/** A name server that answers every query SERVFAIL. */
function failingDns(): Promise<{ address: string; close(): void }> {
  const socket = dgram.createSocket("udp4");
  socket.on("message", (query: Uint8Array, peer) => {
    const answer = new Uint8Array(query);
    answer[2] = 0x81;
    answer[3] = 0x82; // RA, SERVFAIL
    answer.fill(0, 6, 12);
    socket.send(answer, peer.port, peer.address);
  });
  return new Promise((resolve) =>
    socket.bind(0, "127.0.0.1", () =>
      resolve({
        address: `127.0.0.1:${socket.address().port}`,
        close: () => socket.close(),
      }))
  );
}

Deno.test("cli snags: amtp dns says localhost cannot federate, and tells a failing name server from a missing record", async () => {
  const dns = await failingDns();
  const t = await startTestServer({ AMTP_DNS: dns.address });
  const dir = await Deno.makeTempDir({ prefix: "amtp-snag-" });
  try {
    const env = { AMTP_CLI_STATE: `${dir}/s.json`, AMTP_DATA: t.dataDir };
    const login = await runCli(
      [
        "login",
        "--admin",
        "admin",
        "--key",
        `${t.dataDir}/admin.key`,
        "--server",
        `127.0.0.1:${t.server.port}`,
      ],
      env,
      dir,
    );
    assert.equal(login.code, 0, login.stderr);
    await runCli(["admin", "add-domain", "example.org"], env, dir);
    const check = await runCli(["dns"], env, dir);
    assert.equal(check.code, 1);
    assert.match(
      check.stdout,
      /WRONG +localhost: .*\n +localhost is a name for this machine only: .*cannot federate/,
    );
    assert.match(check.stdout, /FAILED +example\.org\. IN TXT "amtp-servers=/);
    assert.match(check.stdout, /name server did not answer it \(SERVFAIL/);
    assert.doesNotMatch(check.stdout, /MISSING +example\.org\. IN TXT/);
    assert.match(check.stdout, /DNS could not be checked completely/);
  } finally {
    await t.close();
    dns.close();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli snags: --ca reaches a private-CA server over WebTransport and WebSocket, by a name resolved through AMTP_DNS", async () => {
  const dir = await Deno.makeTempDir({ prefix: "amtp-snag-ca-" });
  const dns = await startDns(dir);
  const ca = await createCertificate({
    names: ["Snag CA"],
    days: 30,
    ca: true,
  });
  const leaf = await createCertificate({
    names: ["mail.snag.test"],
    days: 30,
    issuer: ca,
  });
  await Deno.writeTextFile(
    `${dir}/cert.pem`,
    chainPem(leaf.certPem, ca.certPem),
  );
  await Deno.writeTextFile(`${dir}/key.pem`, leaf.keyPem);
  await Deno.writeTextFile(`${dir}/ca.pem`, ca.certPem);
  await dns.set({ txt: [], hosts: [["mail.snag.test", "127.0.0.1"]] });
  const t = await startTestServer({
    AMTP_CERT: `${dir}/cert.pem`,
    AMTP_KEY: `${dir}/key.pem`,
    AMTP_HOSTNAME: "mail.snag.test",
  });
  try {
    const env = {
      AMTP_CLI_STATE: `${dir}/s.json`,
      AMTP_DNS: dns.address,
      AMTP_DATA: `${dir}/none`,
    };
    const where = [
      "--server",
      `mail.snag.test:${t.server.port}`,
      "--ca",
      `${dir}/ca.pem`,
    ];
    for (const transport of [[], ["--ws"]]) {
      const info = await runCli(
        ["info", ...where, ...transport, "--json"],
        env,
        dir,
      );
      assert.equal(info.code, 0, `${transport}: ${info.stderr}`);
      assert.equal(JSON.parse(info.stdout).hostname, "mail.snag.test");
    }
    // A login is bound to the name, not the address it resolved to.
    const login = await runCli(
      [
        "login",
        "--admin",
        "admin",
        "--key",
        `${t.dataDir}/admin.key`,
        ...where,
      ],
      env,
      dir,
    );
    assert.equal(login.code, 0, login.stderr);
    assert.match(login.stdout, /at mail\.snag\.test:\d+/);
    // Without the CA the certificate is not trusted, and the CLI says what to do.
    const untrusted = await runCli(
      ["info", "--server", `mail.snag.test:${t.server.port}`, "--ws"],
      { ...env, AMTP_CLI_STATE: `${dir}/t.json` },
      dir,
    );
    assert.equal(untrusted.code, 1);
    assert.match(
      untrusted.stderr,
      /not trusted.*--cert-hash HEX or give its CA with --ca FILE/,
    );
  } finally {
    await t.close();
    await dns.stop();
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("cli snags: watch survives the idle timeout and a server restart (catching up), and gives up with status 1 and a message", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-snag-watch-" });
  const port = freePort();
  const serverEnv = { AMTP_PORT: String(port), AMTP_IDLE_TIMEOUT: "1" };
  let server = await startServerProcess(cwd, serverEnv);
  const as = (who: string) => ({
    AMTP_DATA: `${cwd}/data`,
    AMTP_CLI_STATE: `${cwd}/${who}/s.json`,
    AMTP_CONFIG: `${cwd}/config`,
  });
  const ok = async (who: string, ...args: string[]) => {
    const r = await runCli(args, as(who), cwd);
    assert.equal(r.code, 0, `${args.join(" ")}\n${r.stdout}${r.stderr}`);
    return r.stdout;
  };
  let watch: Deno.ChildProcess | undefined;
  try {
    await ok("admin", "login", "--admin", "admin", "--key", "data/admin.key");
    await ok("admin", "admin", "add-domain", "example.org");
    for (const name of ["alice", "bob"]) {
      await ok("admin", "keygen", name);
      await ok(
        "admin",
        "admin",
        "add-user",
        `${name}@example.org`,
        "--key",
        name,
      );
      await ok(name, "login", "--user", `${name}@example.org`, "--key", name);
    }
    const start = (...extra: string[]) => {
      const child = new Deno.Command(Deno.execPath(), {
        args: ["run", ...taskArgs("amtp"), "watch", "--quiet", ...extra],
        cwd,
        env: cleanEnv(cliEnv(as("bob"))),
        clearEnv: true,
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      const out: string[] = [];
      const err: string[] = [];
      (async () => {
        for await (
          const c of child.stdout.pipeThrough(new TextDecoderStream())
        ) out.push(c);
      })();
      (async () => {
        for await (
          const c of child.stderr.pipeThrough(new TextDecoderStream())
        ) err.push(c);
      })();
      return { child, out: () => out.join(""), err: () => err.join("") };
    };
    const until = async (check: () => boolean, what: string, ms = 20_000) => {
      const end = Date.now() + ms;
      while (!check()) {
        if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const w = start("--count", "2", "--give-up", "30");
    watch = w.child;
    await until(() => w.out().includes("watching"), "watch to start");
    // Longer than the idle timeout: the watcher pings, its session stays.
    await new Promise((r) => setTimeout(r, 3000));
    await ok(
      "alice",
      "send",
      "--to",
      "bob@example.org",
      "--subject",
      "one",
      "--body",
      "1",
    );
    await until(() => w.out().includes("one"), "the first message");
    assert.doesNotMatch(
      w.err(),
      /reconnected/,
      "the session was closed for idling",
    );
    // The server restarts; mail sent meanwhile is caught up.
    await server.stop();
    server = await startServerProcess(cwd, serverEnv);
    await ok(
      "alice",
      "send",
      "--to",
      "bob@example.org",
      "--subject",
      "two",
      "--body",
      "2",
    );
    const status = await w.child.status;
    watch = undefined;
    assert.equal(status.code, 0, w.err());
    assert.match(w.out(), /new: .*alice@example\.org +one/);
    assert.match(w.out(), /new: .*alice@example\.org +two/);
    assert.equal(w.out().match(/new: /g)?.length, 2, "a message printed twice");
    assert.match(w.err(), /reconnected; catching up from change \d+/);
    // The server goes away for good: the watcher gives up, says so, status 1.
    const g = start("--give-up", "2");
    watch = g.child;
    await until(() => g.out().includes("watching"), "watch to start");
    await server.stop();
    const gaveUp = await g.child.status;
    watch = undefined;
    assert.equal(gaveUp.code, 1);
    assert.match(
      g.err(),
      /watch stopped: the connection was lost and could not be opened again: cannot reach|watch stopped: the connection was lost/,
    );
  } finally {
    try {
      watch?.kill("SIGKILL");
      await watch?.status;
    } catch { /* gone */ }
    await server.stop().catch(() => {});
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("cli snags: deno task start serves the web app on http://localhost with a strict policy and the certificate's hash", async () => {
  const cwd = await Deno.makeTempDir({ prefix: "amtp-snag-web-" });
  const server = await startServerProcess(cwd, {
    AMTP_PORT: "0",
    AMTP_WEB: "on",
    AMTP_WEB_PORT: "0",
  });
  try {
    const hash = server.stdout().match(/sha256: ([0-9a-f]{64})/)![1];
    const url = server.stdout().match(/web app: (http:\/\/localhost:\d+\/)/)
      ?.[1];
    assert.ok(url, server.stdout());
    const page = await fetch(url);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<script type="module" src="\/app.js">/);
    const policy = page.headers.get("content-security-policy")!;
    assert.match(policy, /default-src 'none'/);
    assert.match(policy, /script-src 'self'(;|$)/);
    assert.doesNotMatch(policy, /unsafe/);
    const site = await (await fetch(new URL("/config.json", url))).json();
    assert.equal(site.cert_sha256, hash);
    assert.equal(site.webtransport, `https://127.0.0.1:${server.port}/amtp`);
  } finally {
    await server.stop();
    await Deno.remove(cwd, { recursive: true });
  }
});

Deno.test("cli snags: a --server that cannot be reached is not remembered in place of the saved one", async () => {
  const t = await startTestServer();
  const dir = await Deno.makeTempDir({ prefix: "amtp-snag-" });
  try {
    const env = { AMTP_CLI_STATE: `${dir}/s.json`, AMTP_DATA: t.dataDir };
    const good = await runCli(
      ["info", "--server", `127.0.0.1:${t.server.port}`],
      env,
      dir,
    );
    assert.equal(good.code, 0, good.stderr);
    const closed = freePort();
    const bad = await runCli(
      ["info", "--server", `127.0.0.1:${closed}`, "--timeout", "1"],
      env,
      dir,
    );
    assert.equal(bad.code, 1);
    // The next command without --server goes to the server that answered.
    const again = await runCli(["info"], env, dir);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /app_name: AMTP Deno Server/);
    const saved = JSON.parse(await Deno.readTextFile(`${dir}/s.json`));
    assert.equal(saved.server, `127.0.0.1:${t.server.port}`);
  } finally {
    await t.close();
    await Deno.remove(dir, { recursive: true });
  }
});
