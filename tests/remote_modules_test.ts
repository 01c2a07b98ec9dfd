/**
 * Remote modules (`"isolation": "remote"`): module processes started with
 * `deno task module-run`, on another loopback address standing for another
 * machine, over the module port (WebSocket, WebTransport) and the Unix
 * socket; killed, restarted, several at once; and links that are refused.
 */

import assert from "node:assert/strict";
import type { AmtpClient, Response } from "../client/mod.ts";
import { ErrorCode } from "../core/protocol/mod.ts";
import { decodeDocument, encodeDocument } from "../core/wire/mod.ts";
import {
  readPrivateKey,
  readPublicKey,
  writeKeyPair,
} from "../shared/login/keyfile.ts";
import {
  login as linkLogin,
  LoginRefusedError,
  openLink,
} from "../workers/remote/run.ts";
import {
  adminCaller,
  login,
  startTestServer,
  type TestServer,
  userMaker,
  waitFor,
} from "../testing/helpers.ts";
import {
  type RemoteModuleProcess,
  startRemoteModule,
} from "../testing/remote_module.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
/** The server's copies of the manifests (`far` is remote: no code here). */
const SERVER_MODULES = `${FIXTURES}remote/server`;
/** The remote module's own folder: its code, and a manifest claiming more. */
const FAR = `${FIXTURES}remote/module/far/1.0.0`;
const FAST = {
  heartbeat: { intervalMs: 200, toleranceMs: 1000, startMs: 15_000 },
  restartBaseMs: 50,
};

interface World {
  t: TestServer;
  dir: string;
  admin: (
    command: string,
    params?: Record<string, unknown>,
  ) => Promise<Record<string, unknown>>;
  /** A logged-in user's module call. */
  call: (
    module: string,
    command: string,
    params?: Record<string, unknown>,
  ) => Promise<Response>;
  client: AmtpClient;
  /** The user's token. */
  token: string;
  /** A key pair registered for `name` `version`; returns the private key file. */
  key: (name: string, version: string, register?: boolean) => Promise<string>;
  /** module-run flags reaching this server's module port. */
  port: (extra?: string[]) => string[];
  running: RemoteModuleProcess[];
  close: () => Promise<void>;
}

async function world(
  modules = SERVER_MODULES,
  options: { now?: () => number } = {},
): Promise<World> {
  const dir = await Deno.makeTempDir({ prefix: "amtp-remote-" });
  const t = await startTestServer({
    AMTP_DATA: `${dir}/data`,
    AMTP_MODULES: modules,
    AMTP_MODULE_PORT: "0",
    AMTP_MODULE_HOST: "127.0.0.1",
    AMTP_MODULE_SOCKET: `${dir}/modules.sock`,
  }, { moduleHost: FAST, moduleLoginMs: 1000, ...options });
  const admin = await adminCaller(await t.connect(), t.dataDir);
  await admin("admin_add_domain", { domain: "example.org" });
  const key = await userMaker(admin)("alice@example.org");
  const client = await t.connect();
  const token = await login(client, "user", "alice@example.org", key);
  const running: RemoteModuleProcess[] = [];
  let keys = 0;
  return {
    t,
    dir,
    admin,
    client,
    token,
    running,
    call: (module, command, params = {}) =>
      client.request(command, { module, user_token: token, ...params }),
    async key(name, version, register = true) {
      const { keyFile, pubFile } = await writeKeyPair(`${dir}/key${++keys}`);
      if (register) {
        await admin("admin_add_module_key", {
          name,
          version,
          public_key: (await readPublicKey(pubFile)).spki,
          key_label: `key ${keys}`,
        });
      }
      return keyFile;
    },
    port: (extra = []) => [
      "--server",
      `127.0.0.1:${t.server.modulePort}`,
      "--cert-hash",
      t.server.certSha256(),
      "--retry-ms",
      "100",
      ...extra,
    ],
    async close() {
      for (const p of running) await p.kill();
      await t.close();
      await Deno.remove(dir, { recursive: true });
    },
  };
}

function run(w: World, dir: string, args: string[]): RemoteModuleProcess {
  const p = startRemoteModule(dir, args);
  w.running.push(p);
  return p;
}

async function status(w: World, name: string, version: string) {
  const { modules } = await w.admin("admin_get_modules") as {
    modules: Record<string, unknown>[];
  };
  return modules.find((m) => m.name === name && m.version === version)!;
}

async function instances(w: World): Promise<Record<string, unknown>[]> {
  return (await status(w, "far", "1.0.0")).instances as Record<
    string,
    unknown
  >[];
}

async function connected(w: World, n: number, p?: RemoteModuleProcess) {
  try {
    await waitFor(
      async () => (await instances(w)).length === n,
      30_000,
      `${n} instance(s) of far`,
    );
  } catch (error) {
    throw new Error(`${(error as Error).message}\n${p?.output() ?? ""}`);
  }
}

Deno.test("remote modules: a module process on 127.0.0.2 answers users; killed, its calls fail as unavailable within their deadline and the rest is served; restarted, it is used again", async () => {
  const w = await world();
  try {
    assert.equal((await status(w, "far", "1.0.0")).state, "waiting");
    const before = await w.call("far", "where");
    assert.equal(before.error, ErrorCode.MODULE_UNAVAILABLE);
    assert.match(String(before.message), /no instance of it is connected/);

    const keyFile = await w.key("far", "1.0.0");
    const args = w.port(["--key", keyFile, "--ws", "--bind", "127.0.0.2"]);
    const first = run(w, FAR, args);
    await connected(w, 1, first);
    const [instance] = await instances(w);
    assert.equal(instance.address, "127.0.0.2");
    assert.equal(instance.transport, "websocket");
    assert.equal((await status(w, "far", "1.0.0")).state, "running");

    const where = await w.call("far", "where");
    assert.equal(where.error, 0, where.message);
    const data = where.data as { pid: number; caller: { address: string } };
    assert.equal(data.caller.address, "alice@example.org");
    assert.notEqual(data.pid, Deno.pid);
    // Storage goes through the core, in the module's own database there.
    assert.equal((await w.call("far", "put", { key: "a", value: 7 })).error, 0);
    assert.deepEqual((await w.call("far", "get", { key: "a" })).data, {
      value: 7,
    });
    // Its own manifest claims accounts.resolve; the server's copy decides.
    const claimed = await w.call("far", "resolve", {
      address: "alice@example.org",
    });
    assert.equal(claimed.error, ErrorCode.FORBIDDEN, claimed.message);

    // Killed with a call in flight (deadline 1.5 s, the call sleeps 5 s).
    const started = performance.now();
    const inFlight = w.call("far", "slow", { ms: 5000 });
    await new Promise((r) => setTimeout(r, 200));
    await first.kill();
    const failed = await inFlight;
    const waited = performance.now() - started;
    assert.equal(failed.error, ErrorCode.MODULE_UNAVAILABLE, failed.message);
    assert.ok(waited < 1500, `answered after ${waited} ms, past its deadline`);
    await connected(w, 0);
    assert.equal((await status(w, "far", "1.0.0")).state, "waiting");
    const gone = await w.call("far", "where");
    assert.equal(gone.error, ErrorCode.MODULE_UNAVAILABLE);
    // The rest of the server goes on.
    assert.deepEqual((await w.call("near", "ping")).data, { pong: true });
    assert.equal(
      (await w.client.request("user_serverinfo", { user_token: w.token }))
        .error,
      0,
    );

    // Restarted: used again, its data still there.
    const second = run(w, FAR, args);
    await connected(w, 1, second);
    const again = await w.call("far", "where");
    assert.equal(again.error, 0, again.message);
    assert.notEqual((again.data as { pid: number }).pid, data.pid);
    assert.deepEqual((await w.call("far", "get", { key: "a" })).data, {
      value: 7,
    });
  } finally {
    await w.close();
  }
});

Deno.test("remote modules: two instances, over WebTransport and over WebSocket, share the calls", async () => {
  const w = await world();
  try {
    const keyFile = await w.key("far", "1.0.0");
    const one = run(w, FAR, w.port(["--key", keyFile]));
    await connected(w, 1, one);
    const two = run(
      w,
      FAR,
      w.port(["--key", keyFile, "--ws", "--bind", "127.0.0.2"]),
    );
    await connected(w, 2, two);
    const transports = (await instances(w)).map((i) => i.transport).sort();
    assert.deepEqual(transports, ["websocket", "webtransport"]);
    const counts = new Map<number, number>();
    for (let i = 0; i < 20; i++) {
      const answer = await w.call("far", "where");
      assert.equal(answer.error, 0, answer.message);
      const pid = (answer.data as { pid: number }).pid;
      counts.set(pid, (counts.get(pid) ?? 0) + 1);
    }
    assert.equal(counts.size, 2, `calls per instance: ${[...counts.values()]}`);
    for (const n of counts.values()) {
      assert.ok(n >= 5, `uneven: ${[...counts.values()]}`);
    }
    // Concurrent calls too: the one with fewer in flight gets the next.
    const answers = await Promise.all(
      Array.from({ length: 10 }, () => w.call("far", "slow", { ms: 100 })),
    );
    const pids = new Set(answers.map((a) => (a.data as { pid: number }).pid));
    assert.equal(pids.size, 2);
    const figures = await instances(w);
    assert.ok(
      figures.every((i) => Number(i.calls) >= 10),
      JSON.stringify(figures),
    );

    // The WebTransport one is killed with a call in flight on each: QUIC
    // says nothing of a killed process, its silence on the heartbeat does.
    // Its call fails as unavailable, the other's is answered.
    const started = performance.now();
    const pair = [
      w.call("far", "slow", { ms: 1000 }),
      w.call("far", "slow", { ms: 1000 }),
    ];
    await new Promise((r) => setTimeout(r, 100));
    await one.kill();
    const outcomes = (await Promise.all(pair)).map((a) => a.error).sort();
    const waited = performance.now() - started;
    assert.deepEqual(outcomes, [0, ErrorCode.MODULE_UNAVAILABLE]);
    // Within its deadline (1.5 s) and the heartbeat's tolerance (1 s) of
    // the kill, whichever notices first, with room for a loaded machine.
    assert.ok(waited < 4000, `answered after ${waited} ms`);
    // One goes: the other serves everything.
    await connected(w, 1);
    for (let i = 0; i < 4; i++) {
      assert.equal((await w.call("far", "where")).error, 0);
    }
  } finally {
    await w.close();
  }
});

Deno.test("remote modules: an unregistered key, a key of another version, a silent or chatty link are refused; a removed key's links are closed", async () => {
  const w = await world();
  try {
    // A key no admin registered.
    const stranger = run(
      w,
      FAR,
      w.port(["--key", await w.key("far", "1.0.0", false)]),
    );
    assert.equal(await exitCode(stranger), 2, stranger.output());
    assert.match(stranger.output(), /LOGIN_FAILED/);
    // A key registered for another version of the module.
    const other = run(w, FAR, w.port(["--key", await w.key("far", "2.0.0")]));
    assert.equal(await exitCode(other), 2, other.output());
    assert.match(other.output(), /LOGIN_FAILED/);
    assert.equal((await instances(w)).length, 0);
    // A server whose certificate is not the pinned one gets no login: the
    // module tries again (it may be a passing impostor), and says why.
    const keyFile = await w.key("far", "1.0.0");
    const pinned = run(w, FAR, [
      ...w.port(["--key", keyFile, "--ws"]),
      "--cert-hash",
      "00".repeat(32),
    ]);
    await waitFor(
      () => /not the pinned/.test(pinned.output()),
      20_000,
      "the pin refusal",
    ).catch((error) => {
      throw new Error(`${error.message}\n${pinned.output()}`);
    });
    await pinned.kill();
    assert.equal((await instances(w)).length, 0);
    assert.ok(!w.t.logs.some((line) => /event=module_link /.test(line)));

    // A link that says nothing is dropped after the login time (1 s here).
    const silent = await Deno.connect({
      transport: "unix",
      path: `${w.dir}/modules.sock`,
    });
    const ended = await readAll(silent);
    assert.equal(ended.length, 0);
    // A link that sends anything but a login is answered and dropped.
    const chatty = await Deno.connect({
      transport: "unix",
      path: `${w.dir}/modules.sock`,
    });
    await chatty.write(
      encodeDocument({
        t: "rpc",
        id: 1,
        method: "push",
        args: ["alice@example.org", "far_event", {}],
      }),
    );
    const answer = decodeDocument(await readAll(chatty));
    assert.equal(answer.error, ErrorCode.NOT_LOGGED_IN);
    // A frame past the limit (16 MiB) is refused by its length prefix,
    // before anything of it is buffered, and the link closed.
    const huge = await Deno.connect({
      transport: "unix",
      path: `${w.dir}/modules.sock`,
    });
    const prefix = new Uint8Array(1024);
    new DataView(prefix.buffer).setInt32(0, 64 * 1024 * 1024, true);
    await huge.write(prefix);
    assert.equal((await readAll(huge)).length, 0);
    await waitFor(
      () =>
        w.t.logs.some((line) =>
          line.includes("module_login_failed") &&
          line.includes("exceeds the limit of 16777216")
        ),
      5000,
      "the frame refusal in the log",
    );

    // Registered, linked, then removed: the link is closed and the module
    // cannot log in again.
    const linked = run(w, FAR, w.port(["--key", keyFile, "--ws"]));
    await connected(w, 1, linked);
    const { keys } = await w.admin("admin_get_module_keys", {
      name: "far",
    }) as {
      keys: { version: string; key_id: string }[];
    };
    const registered = keys.find((k) => k.version === "1.0.0")!;
    await w.admin("admin_del_module_key", {
      name: "far",
      version: "1.0.0",
      key_id: registered.key_id,
    });
    await connected(w, 0);
    assert.equal(await exitCode(linked), 2, linked.output());
    assert.match(linked.output(), /LOGIN_FAILED/);
  } finally {
    await w.close();
  }
});

/** A module-run's exit code, or "running" when it has not ended within 20 s. */
async function exitCode(p: RemoteModuleProcess): Promise<number | "running"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"running">((resolve) =>
    timer = setTimeout(() => resolve("running"), 20_000)
  );
  try {
    return await Promise.race([p.exited, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** Everything a Unix socket gets until the server closes it. */
async function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const chunk of conn.readable) parts.push(chunk);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

Deno.test("remote modules: the same module folder runs as a process and, unchanged, as a remote module over the Unix socket", async () => {
  const w = await world(`${FIXTURES}modules`);
  const probe = `${FIXTURES}modules/probe/1.0.0`;
  try {
    const local = await w.call("probe", "whoami", { version: "1.0.0" });
    assert.equal(local.error, 0, local.message);
    await w.admin("admin_set_module_isolation", {
      name: "probe",
      version: "1.0.0",
      isolation: "remote",
    });
    const keyFile = await w.key("probe", "1.0.0");
    const p = run(w, probe, [
      "--socket",
      `${w.dir}/modules.sock`,
      "--key",
      keyFile,
    ]);
    await waitFor(
      async () => {
        const s = await status(w, "probe", "1.0.0");
        return (s.instances as unknown[]).length === 1;
      },
      30_000,
      "probe linked",
    ).catch((error) => {
      throw new Error(`${error.message}\n${p.output()}`);
    });
    const s = await status(w, "probe", "1.0.0");
    assert.equal(s.isolation, "remote");
    assert.equal((s.instances as { transport: string }[])[0].transport, "unix");
    const remote = await w.call("probe", "whoami", { version: "1.0.0", x: 1 });
    assert.equal(remote.error, 0, remote.message);
    // The same caller, but for its ticket, which is new for every call.
    const untick = (data: unknown) => {
      const { caller, ...rest } = data as {
        caller: { ticket?: unknown };
      } & Record<string, unknown>;
      assert.equal(typeof caller.ticket, "string");
      const { ticket: _, ...person } = caller;
      return { ...rest, caller: person };
    };
    assert.deepEqual(
      untick(remote.data),
      untick({ ...(local.data as Record<string, unknown>), params: { x: 1 } }),
    );
    // Back in a process: the remote instance is let go.
    await w.admin("admin_set_module_isolation", {
      name: "probe",
      version: "1.0.0",
      isolation: "process",
    });
    assert.equal(
      (await w.call("probe", "whoami", { version: "1.0.0" })).error,
      0,
    );
  } finally {
    await w.close();
  }
});

Deno.test("remote modules: a logged-in link that floods the core with what it did not ask for is dropped, and takes no calls", async () => {
  const w = await world();
  try {
    const keyFile = await w.key("far", "1.0.0");
    const link = await openLink({ socket: `${w.dir}/modules.sock` });
    const frames = link.frames()[Symbol.asyncIterator]();
    const grant = await linkLogin(
      link,
      frames,
      { name: "far", version: "1.0.0" },
      await readPrivateKey(keyFile),
      "localhost",
    );
    // What it is granted is the server's copy of the manifest.
    assert.deepEqual(grant.services, []);
    assert.deepEqual(grant.commands, [
      "where",
      "slow",
      "put",
      "get",
      "resolve",
    ]);
    // Answers to no call, instead of `ready`.
    for (let i = 0; i < 150; i++) {
      await link.send(encodeDocument({ t: "ret", id: 1000 + i, value: null }));
    }
    let ended = false;
    while (!ended) ended = (await frames.next()).done === true;
    assert.ok(w.t.logs.some((line) => line.includes("module_unsolicited")));
    assert.equal((await instances(w)).length, 0);
    assert.equal(
      (await w.call("far", "where")).error,
      ErrorCode.MODULE_UNAVAILABLE,
    );
  } finally {
    await w.close();
  }
});

Deno.test("remote modules: failed module logins (unknown key, key of another version, wrong signature) are counted and blocked per IP on the module port and per version on the socket; a right key from the blocked source is refused too", async () => {
  // The guard's clock stands still during the attack: the 1 s block of the
  // sixth failure does not end before the checks that follow it.
  let frozen: number | undefined;
  const w = await world(SERVER_MODULES, { now: () => frozen ?? Date.now() });
  try {
    const rightFile = await w.key("far", "1.0.0");
    const right = await readPrivateKey(rightFile);
    const otherVersion = await readPrivateKey(await w.key("far", "2.0.0"));
    const unknown = await readPrivateKey(await w.key("far", "1.0.0", false));
    // A registered key's id with a signature of another key.
    const forged = { ...unknown, keyId: right.keyId };
    const far = { name: "far", version: "1.0.0" };
    /** One login on a new link: "granted", or the refusal's code and retry_after. */
    const attempt = async (
      key: typeof right,
      via: { from?: string; socket?: boolean; version?: string } = {},
    ): Promise<"granted" | { error: number; retryAfter?: number }> => {
      const link = await openLink(
        via.socket ? { socket: `${w.dir}/modules.sock` } : {
          server: `127.0.0.1:${w.t.server.modulePort}`,
          certHash: w.t.server.certSha256(),
          websocket: true,
          bind: via.from,
        },
      );
      try {
        await linkLogin(
          link,
          link.frames()[Symbol.asyncIterator](),
          { ...far, version: via.version ?? far.version },
          key,
          via.socket ? "localhost" : "127.0.0.1",
        );
        return "granted";
      } catch (error) {
        if (!(error instanceof LoginRefusedError)) throw error;
        return { error: error.error, retryAfter: error.retryAfter };
      } finally {
        link.close();
      }
    };
    frozen = Date.now();
    // Six failures of far 1.0.0 from 127.0.0.1, two of each kind: all alike.
    for (const key of [unknown, otherVersion, forged]) {
      for (let i = 0; i < 2; i++) {
        assert.deepEqual(await attempt(key), {
          error: ErrorCode.LOGIN_FAILED,
          retryAfter: undefined,
        });
      }
    }
    // Blocked now: an unknown key and the right one get the same answer.
    for (const key of [unknown, right]) {
      const blocked = await attempt(key);
      assert.notEqual(blocked, "granted");
      const { error, retryAfter } = blocked as {
        error: number;
        retryAfter: number;
      };
      assert.equal(error, ErrorCode.LOGIN_BLOCKED);
      assert.ok(retryAfter >= 1, `retry_after ${retryAfter}`);
    }
    assert.equal((await instances(w)).length, 0);
    // Another source is not blocked: the right key logs in from 127.0.0.2.
    assert.equal(await attempt(right, { from: "127.0.0.2" }), "granted");
    const { blocks } = await w.admin("admin_get_blocks") as {
      blocks: { scope: string; id: string }[];
    };
    assert.ok(
      blocks.some((b) =>
        b.scope === "account_ip" && b.id.startsWith("module:far@1.0.0")
      ),
      JSON.stringify(blocks),
    );
    // module-run, blocked, does not give up: it tries again after
    // retry_after, and logs in once the block has ended.
    await connected(w, 0);
    const patient = run(w, FAR, w.port(["--key", rightFile, "--ws"]));
    await waitFor(
      () => /LOGIN_BLOCKED/.test(patient.output()),
      20_000,
      "module-run to be blocked",
    ).catch((error) => {
      throw new Error(`${error.message}\n${patient.output()}`);
    });
    frozen = undefined;
    await connected(w, 1, patient);

    // On the Unix socket every link is "unix": failures count per version.
    frozen = Date.now();
    for (let i = 0; i < 6; i++) {
      assert.deepEqual(
        await attempt(unknown, { socket: true, version: "2.0.0" }),
        { error: ErrorCode.LOGIN_FAILED, retryAfter: undefined },
      );
    }
    const blocked = await attempt(otherVersion, {
      socket: true,
      version: "2.0.0",
    });
    assert.equal(
      (blocked as { error: number }).error,
      ErrorCode.LOGIN_BLOCKED,
    );
    // Another version on the socket is not blocked by them, and they are
    // not counted against the socket as a source (there is no `ip` "unix").
    assert.equal(await attempt(right, { socket: true }), "granted");
    const after = (await w.admin("admin_get_blocks") as {
      blocks: { scope: string; id: string; failures: number }[];
    }).blocks;
    assert.ok(
      after.some((b) =>
        b.scope === "account_ip" && b.id.startsWith("module:far@2.0.0")
      ),
      JSON.stringify(after),
    );
    assert.ok(
      after.some((b) => b.scope === "ip" && b.id === "127.0.0.1"),
      JSON.stringify(after),
    );
    assert.ok(
      !after.some((b) => b.scope === "ip" && b.id === "unix"),
      JSON.stringify(after),
    );
  } finally {
    await w.close();
  }
});
