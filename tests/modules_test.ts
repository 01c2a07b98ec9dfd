/**
 * The module host over real sessions: permission-restricted Workers and
 * subprocesses, versions side by side, reload without disturbance, failure
 * isolation, storage isolation and events.
 */

import assert from "node:assert/strict";
import type { AmtpClient, Push } from "../client/mod.ts";
import { ErrorCode } from "../core/protocol/mod.ts";
import {
  adminCaller,
  login,
  startTestServer,
  type TestServer,
  userMaker,
  waitFor,
} from "../testing/helpers.ts";

const FIXTURES = new URL("./fixtures/modules", import.meta.url).pathname;
const FAST = {
  heartbeat: { intervalMs: 200, toleranceMs: 1000, startMs: 15_000 },
  restartBaseMs: 50,
};

interface World {
  t: TestServer;
  admin: (
    command: string,
    params?: Record<string, unknown>,
  ) => Promise<Record<string, unknown>>;
  user: (
    address: string,
  ) => Promise<
    {
      client: AmtpClient;
      call: (
        module: string,
        command: string,
        params?: Record<string, unknown>,
      ) => Promise<import("../client/mod.ts").Response>;
    }
  >;
}

async function world(env: Record<string, string> = {}): Promise<World> {
  const t = await startTestServer({ AMTP_MODULES: FIXTURES, ...env }, {
    moduleHost: FAST,
  });
  const admin = await adminCaller(await t.connect(), t.dataDir);
  await admin("admin_add_domain", { domain: "example.org" }).catch(() => {});
  const makeUser = userMaker(admin);
  return {
    t,
    admin,
    async user(address) {
      const key = await makeUser(address);
      const client = await t.connect();
      const token = await login(client, "user", address, key);
      return {
        client,
        call: (module, command, params = {}) =>
          client.request(command, { module, user_token: token, ...params }),
      };
    },
  };
}

async function status(w: World, name: string, version: string) {
  const { modules } = await w.admin("admin_get_modules") as {
    modules: Record<string, unknown>[];
  };
  return modules.find((m) => m.name === name && m.version === version)!;
}

Deno.test("modules: two versions side by side, chosen by range or default; the caller cannot be spoofed", async () => {
  const w = await world();
  try {
    const { call, client } = await w.user("alice@example.org");
    const v1 = await call("probe", "whoami", { version: "1.0.0" });
    assert.equal(v1.error, 0, v1.message);
    assert.equal((v1.data as { version: string }).version, "1.0.0");
    const v2 = await call("probe", "whoami", { version: "^2" });
    assert.equal((v2.data as { version: string }).version, "2.0.0");
    const latest = await call("probe", "whoami");
    assert.equal((latest.data as { version: string }).version, "2.0.0");
    await w.admin("admin_set_module_default", {
      name: "probe",
      version: "1.0.0",
    });
    assert.equal(
      ((await call("probe", "whoami")).data as { version: string }).version,
      "1.0.0",
    );
    assert.equal(
      (await call("probe", "whoami", { version: "^3" })).error,
      ErrorCode.MODULE_UNAVAILABLE,
    );
    assert.equal(
      (await call("probe", "whoami", { version: "not a range" })).error,
      ErrorCode.INVALID_PARAMETER,
    );
    assert.equal(
      (await call("nosuch", "whoami")).error,
      ErrorCode.MODULE_UNAVAILABLE,
    );
    assert.equal(
      (await call("probe", "undeclared")).error,
      ErrorCode.UNKNOWN_COMMAND,
    );
    // A client-supplied identity is only a parameter; the caller comes from the token.
    const spoof = await call("probe", "whoami", {
      caller: { address: "root@example.org", session: "x" },
      address: "root@example.org",
    });
    const data = spoof.data as {
      caller: { address: string; session: string };
      params: Record<string, unknown>;
    };
    assert.equal(data.caller.address, "alice@example.org");
    assert.notEqual(data.caller.session, "x");
    assert.equal(data.params.address, "root@example.org");
    assert.ok(!("user_token" in data.params));
    // Module requests need a user token.
    assert.equal(
      (await client.request("whoami", { module: "probe" })).error,
      ErrorCode.NOT_LOGGED_IN,
    );
    // Not shipped with the server: a process, though the manifest says nothing.
    const placed = await status(w, "probe", "1.0.0");
    assert.equal(placed.isolation, "process");
    assert.equal(placed.shipped, false);
    const info = await client.call<
      { modules: { name: string; versions: string[] }[] }
    >("info");
    assert.deepEqual(
      info.modules.find((m) => m.name === "probe")?.versions.sort(),
      ["1.0.0", "2.0.0"],
    );
  } finally {
    await w.t.close();
  }
});

for (const isolation of ["worker", "process"] as const) {
  Deno.test(`modules (${isolation}): a file or socket not granted is refused and logged`, async () => {
    const w = await world();
    try {
      await w.admin("admin_set_module_isolation", {
        name: "probe",
        version: "1.0.0",
        isolation,
      });
      const { call } = await w.user("alice@example.org");
      for (const command of ["read_file", "open_socket"]) {
        const r = await call("probe", command, { version: "1.0.0" });
        assert.equal(r.error, ErrorCode.INTERNAL, `${command}: ${r.message}`);
        assert.match(r.message ?? "", /no permission/);
      }
      const denied = w.t.logs.filter((l) =>
        l.includes("module_permission_denied")
      );
      assert.equal(denied.length, 2);
      // Its own database it may use, in either isolation.
      assert.equal(
        (await call("probe", "put", {
          version: "1.0.0",
          key: isolation,
          value: "stored",
        })).error,
        0,
      );
      assert.equal(
        ((await call("probe", "get", { version: "1.0.0", key: isolation }))
          .data as { value: string }).value,
        "stored",
      );
      assert.match(denied[0], /NotCapable|Requires read access/);
      assert.equal(
        (await call("probe", "whoami", { version: "1.0.0" })).error,
        0,
      );
    } finally {
      await w.t.close();
    }
  });

  Deno.test(`modules (${isolation}): a throwing handler, a crash and an endless loop leave the server serving`, async () => {
    const w = await world();
    try {
      await w.admin("admin_set_module_isolation", {
        name: "probe",
        version: "1.0.0",
        isolation,
      });
      const { call, client } = await w.user("alice@example.org");
      const v = { version: "1.0.0" };
      // A module's own error code reaches the client.
      const fail = await call("probe", "fail", v);
      assert.equal(fail.error, ErrorCode.INVALID_PARAMETER);
      assert.deepEqual(fail.data, { parameter: "x" });
      // A throwing handler answers that request only.
      const thrown = await call("probe", "throw", v);
      assert.equal(thrown.error, ErrorCode.INTERNAL);
      assert.match(thrown.message ?? "", /handler exploded/);
      assert.equal((await call("probe", "whoami", v)).error, 0);

      // A crash: the request fails, the module comes back.
      const crashed = await call("probe", "crash", v);
      assert.equal(crashed.error, ErrorCode.MODULE_UNAVAILABLE);
      assert.equal((await client.request("ping")).error, 0);
      await waitFor(
        async () => (await call("probe", "whoami", v)).error === 0,
        20_000,
        "restart after crash",
      );
      assert.ok(((await status(w, "probe", "1.0.0")).restarts as number) >= 1);

      // An endless loop: detected by the deadline, marked unavailable, replaced.
      const started = Date.now();
      const looped = call("probe", "loop", v);
      // Meanwhile the server and the other version keep serving.
      assert.equal((await client.request("ping")).error, 0);
      assert.equal(
        (await call("probe", "whoami", { version: "2.0.0" })).error,
        0,
      );
      const hung = await looped;
      assert.equal(hung.error, ErrorCode.MODULE_UNAVAILABLE, hung.message);
      assert.ok(Date.now() - started < 5000);
      await waitFor(
        async () => (await call("probe", "whoami", v)).error === 0,
        20_000,
        "replacement after hang",
      );
      const after = await status(w, "probe", "1.0.0");
      assert.equal(after.hangs, 1);
      assert.equal(after.state, "running");
      if (isolation === "process") {
        // The hung process was killed: one probe 1.0.0 process is left.
        const ps = await new Deno.Command("pgrep", {
          args: ["-f", "probe/1.0.0/mod.ts"],
          stdout: "piped",
        }).output();
        const pids = new TextDecoder().decode(ps.stdout).trim().split("\n")
          .filter(Boolean);
        assert.equal(pids.length, 1, `processes: ${pids.join(",")}`);
      }
      // A slow handler that still answers pings gets TIMEOUT, not a restart.
      const slow = await call("probe", "slow", { ...v, ms: 1500 });
      assert.equal(slow.error, ErrorCode.TIMEOUT, slow.message);
      assert.equal((await status(w, "probe", "1.0.0")).hangs, 1);
    } finally {
      await w.t.close();
    }
  });
}

Deno.test("modules: a Worker that hangs once moves to process isolation", async () => {
  const w = await world();
  try {
    const { call } = await w.user("alice@example.org");
    const v = { version: "1.0.0" };
    await w.admin("admin_set_module_isolation", {
      name: "probe",
      version: "1.0.0",
      isolation: "worker",
    });
    assert.equal(
      (await call("probe", "loop", v)).error,
      ErrorCode.MODULE_UNAVAILABLE,
    );
    await waitFor(
      async () => (await call("probe", "whoami", v)).error === 0,
      20_000,
      "running as a process",
    );
    const after = await status(w, "probe", "1.0.0");
    assert.equal(after.isolation, "process");
    assert.equal(after.hangs, 1);
    assert.ok(w.t.logs.some((l) => l.includes("module_isolation_changed")));
  } finally {
    await w.t.close();
  }
});

Deno.test("modules: the modules shipped with the server run where their manifest says", async () => {
  const t = await startTestServer();
  try {
    const admin = await adminCaller(await t.connect(), t.dataDir);
    const { modules } = await admin("admin_get_modules") as {
      modules: Record<string, unknown>[];
    };
    const example = modules.find((m) => m.name === "example")!;
    assert.equal(example.shipped, true);
    assert.equal(example.isolation, "worker");
    assert.equal(example.state, "running");
  } finally {
    await t.close();
  }
});

Deno.test("modules: storage is per module, large values are chunked, the quota holds", async () => {
  const w = await world();
  try {
    const { call } = await w.user("alice@example.org");
    assert.equal(
      (await call("probe", "put", { key: "k", value: "probe secret" })).error,
      0,
    );
    assert.equal(
      ((await call("probe", "get", { key: "k", version: "1.0.0" })).data as {
        value: string;
      }).value,
      "probe secret",
    );
    // Another module asking for the same key sees its own namespace.
    assert.equal(
      ((await call("other", "get", { key: "k" })).data as { value: unknown })
        .value,
      null,
    );
    await call("other", "put", { key: "k", value: "other value" });
    assert.equal(
      ((await call("probe", "get", { key: "k" })).data as { value: string })
        .value,
      "probe secret",
    );
    // Each module's data is in its own database, which no other module may open.
    const stores = `${w.t.dataDir}/modules`;
    const own = await Deno.openKv(`${stores}/probe.kv`);
    assert.equal(
      // A small value's head is `[size, value]` (workers/sdk/storage.ts).
      (await own.get<[number, string]>(["mod", "probe", "d", "shared", "k"]))
        .value?.[1],
      "probe secret",
    );
    own.close();
    const refused = await call("probe", "open_kv", {
      path: `${stores}/other.kv`,
      version: "1.0.0",
    });
    assert.equal(refused.error, ErrorCode.INTERNAL, refused.message);
    assert.match(refused.message ?? "", /no permission/);
    // A value far over one KV value (64 KiB) round-trips.
    const big = new Uint8Array(300_000).map((_, i) => i % 251);
    assert.equal(
      (await call("probe", "put", { key: "big", value: big })).error,
      0,
    );
    const back = (await call("probe", "get", { key: "big" })).data as {
      value: Uint8Array;
    };
    assert.deepEqual([...back.value.subarray(0, 1000)], [
      ...big.subarray(0, 1000),
    ]);
    assert.equal(back.value.byteLength, big.byteLength);
    // Past the quota (1,000,000 bytes).
    const tooBig = await call("probe", "put", {
      key: "huge",
      value: new Uint8Array(800_000),
    });
    assert.equal(tooBig.error, ErrorCode.LIMIT_EXCEEDED);
    assert.match(tooBig.message ?? "", /quota/);
    // Overwriting frees the old size.
    assert.equal(
      (await call("probe", "put", { key: "big", value: "small now" })).error,
      0,
    );
    assert.equal(
      (await call("probe", "put", {
        key: "huge",
        value: new Uint8Array(800_000),
      })).error,
      0,
    );
  } finally {
    await w.t.close();
  }
});

Deno.test("modules: a core service is served when the manifest grants it, refused when it does not", async () => {
  const w = await world();
  try {
    const { call } = await w.user("alice@example.org");
    await w.user("bob@example.org");
    await w.admin("admin_set_user", {
      address: "bob@example.org",
      name: "Bob",
    });
    // probe 1.0.0 lists accounts.profile in "services".
    const granted = await call("probe", "profile", {
      version: "1.0.0",
      address: "bob@example.org",
    });
    assert.equal(granted.error, 0, granted.message);
    const profile = (granted.data as { profile: Record<string, unknown> })
      .profile;
    assert.equal(profile.address, "bob@example.org");
    assert.equal(profile.name, "Bob");
    const nobody = await call("probe", "profile", {
      version: "1.0.0",
      address: "nobody@example.org",
    });
    assert.equal((nobody.data as { profile: unknown }).profile, null);
    // Arguments of another shape are the module's invalid_parameter.
    const long = await call("probe", "profile", {
      version: "1.0.0",
      address: "x".repeat(400),
    });
    assert.equal(long.error, ErrorCode.INVALID_PARAMETER);
    assert.match(String(long.message), /args\[0\]/);
    // probe 2.0.0 does not: the core refuses, the module's error says so
    // (once that version has started: 8 until then).
    let refused = await call("probe", "profile", {
      version: "2.0.0",
      address: "bob@example.org",
    });
    for (
      let i = 0;
      i < 150 && refused.error === ErrorCode.MODULE_UNAVAILABLE;
      i++
    ) {
      await new Promise((r) => setTimeout(r, 100));
      refused = await call("probe", "profile", {
        version: "2.0.0",
        address: "bob@example.org",
      });
    }
    assert.equal(refused.error, ErrorCode.FORBIDDEN);
    assert.match(String(refused.message), /not declared in the manifest/);
  } finally {
    await w.t.close();
  }
});

Deno.test("modules: mail.deliver only for a module that declares it, its authentication results checked field by field", async () => {
  const w = await world();
  try {
    const { call } = await w.user("alice@example.org");
    const raw = new TextEncoder().encode("Subject: x\r\n\r\nx\r\n");
    const auth = {
      client_ip: "192.0.2.1",
      helo: "mx.example.net",
      tls: true,
      spf: { result: "pass", domain: "example.net" },
      dkim: [{ result: "pass", domain: "example.net", selector: "s" }],
      dmarc: { result: "pass", domain: "example.net", policy: "reject" },
      arc: { result: "none" },
      summary: "mx; spf=pass",
    };
    const deliver = (version: string, a: unknown) =>
      call("probe", "deliver", {
        version,
        mail_from: "x@example.net",
        to: ["alice@example.org"],
        raw,
        auth: a,
      });
    // Not declared (probe 2.0.0): refused.
    assert.equal((await deliver("2.0.0", auth)).error, ErrorCode.FORBIDDEN);
    // Declared, but results of another shape (what a taken-over gateway
    // might send: a verdict that is not one, an unbounded list): refused
    // before the core uses them.
    for (
      const forged of [
        { ...auth, dmarc: "pass" },
        { ...auth, dkim: Array(11).fill(auth.dkim[0]) },
        { ...auth, summary: "x".repeat(3000) },
      ]
    ) {
      const r = await deliver("1.0.0", forged);
      assert.equal(r.error, ErrorCode.INVALID_PARAMETER, r.message);
      assert.match(String(r.message), /auth/);
    }
    // Well formed: past the check (no messages module here to take it).
    const good = await deliver("1.0.0", auth);
    assert.notEqual(good.error, ErrorCode.INVALID_PARAMETER, good.message);
  } finally {
    await w.t.close();
  }
});

Deno.test("modules: events reach every live session of the address, tagged with the module", async () => {
  const w = await world();
  try {
    const a1 = await w.user("alice@example.org");
    const a2 = await w.user("alice@example.org");
    const bob = await w.user("bob@example.org");
    const got: Push[][] = [[], [], []];
    [a1, a2, bob].forEach((s, i) => s.client.onPush((p) => got[i].push(p)));
    // The second session binds to Alice by making a request.
    await a2.call("probe", "whoami");
    await bob.call("probe", "whoami");
    const r = await a1.call("probe", "push", { version: "1.0.0" });
    assert.equal((r.data as { delivered: number }).delivered, 2);
    await waitFor(
      () => got[0].length === 1 && got[1].length === 1,
      5000,
      "pushes",
    );
    assert.deepEqual(got[0][0], {
      event: "probed",
      module: "probe",
      account: "alice@example.org",
      data: { version: "1.0.0" },
    });
    assert.equal(got[2].length, 0);
    // An event the manifest does not declare is refused.
    const undeclared = await a1.call("probe", "push", { event: "sneaky" });
    assert.notEqual(undeclared.error, 0);
  } finally {
    await w.t.close();
  }
});

Deno.test("modules: reload, disable, unload and load without a restart, other sessions undisturbed", async () => {
  const w = await world();
  try {
    const sessions = await Promise.all(
      [1, 2, 3].map(() => w.user("alice@example.org")),
    );
    let stop = false;
    const errors: string[] = [];
    let calls = 0;
    const workers = sessions.map(async (s) => {
      while (!stop) {
        const r = await s.call("probe", "whoami", { version: "2.0.0" });
        calls++;
        if (r.error !== 0) errors.push(r.message ?? String(r.error));
      }
    });
    // Reload 2.0.0 twice and 1.0.0 once while the sessions work on 2.0.0;
    // each session goes on with calls to the new copy afterwards.
    await w.admin("admin_reload_module", { name: "probe", version: "2.0.0" });
    await w.admin("admin_reload_module", { name: "probe", version: "1.0.0" });
    await w.admin("admin_reload_module", { name: "probe", version: "2.0.0" });
    const reloaded = calls;
    await waitFor(
      () => calls >= reloaded + 3 * sessions.length,
      10_000,
      "calls",
    );
    stop = true;
    await Promise.all(workers);
    assert.deepEqual(errors, []);

    const { call } = sessions[0];
    await w.admin("admin_disable_module", { name: "probe", version: "1.0.0" });
    assert.equal(
      (await call("probe", "whoami", { version: "1.0.0" })).error,
      ErrorCode.MODULE_UNAVAILABLE,
    );
    assert.equal((await status(w, "probe", "1.0.0")).state, "disabled");
    await w.admin("admin_enable_module", { name: "probe", version: "1.0.0" });
    assert.equal(
      (await call("probe", "whoami", { version: "1.0.0" })).error,
      0,
    );
    await w.admin("admin_unload_module", { name: "probe", version: "2.0.0" });
    assert.equal(
      ((await call("probe", "whoami")).data as { version: string }).version,
      "1.0.0",
    );
    await w.admin("admin_load_module", { name: "probe", version: "2.0.0" });
    assert.equal(
      ((await call("probe", "whoami")).data as { version: string }).version,
      "2.0.0",
    );
    const missing = await sessions[0].client.request("admin_load_module", {
      name: "probe",
      version: "9.9.9",
    });
    assert.notEqual(missing.error, 0);
  } finally {
    await w.t.close();
  }
});

Deno.test("modules: a module whose handlers differ from its manifest is refused at start, both differences named", async () => {
  const t = await startTestServer({
    AMTP_MODULES: new URL("./fixtures/mismatch", import.meta.url).pathname,
  }, { moduleHost: FAST });
  try {
    const admin = await adminCaller(await t.connect(), t.dataDir);
    const { modules } = await admin("admin_get_modules") as {
      modules: Record<string, unknown>[];
    };
    assert.equal(modules[0].state, "refused");
    const error = String(modules[0].last_error);
    assert.match(
      error,
      /module\.json lists "listed_only" but serveModule has no handler/,
    );
    assert.match(
      error,
      /serveModule handles "handled_only" that module\.json does not list/,
    );
    assert.ok(t.logs.some((l) => l.includes("module_refused")));
    // A reload is refused the same way, with the same words.
    await assert.rejects(
      admin("admin_reload_module", { name: "mismatched", version: "1.0.0" }),
      (error: { code?: number; message: string }) =>
        error.code === ErrorCode.MODULE_UNAVAILABLE &&
        /"listed_only".*"handled_only"/.test(error.message),
    );
    assert.equal(
      (await admin("admin_get_modules") as { modules: { state: string }[] })
        .modules[0].state,
      "refused",
    );
  } finally {
    await t.close();
  }
});

Deno.test("modules: admin choices survive a restart", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "amtp-test-" });
  try {
    const w = await world({ AMTP_DATA: dataDir });
    await w.admin("admin_disable_module", { name: "other", version: "1.0.0" });
    await w.admin("admin_set_module_default", {
      name: "probe",
      version: "1.0.0",
    });
    // Trusting a module not shipped with the server with a Worker is logged.
    await w.admin("admin_set_module_isolation", {
      name: "probe",
      version: "2.0.0",
      isolation: "worker",
    });
    assert.ok(
      w.t.logs.some((l) =>
        l.includes("module_trusted") && l.includes("module=probe")
      ),
    );
    await w.t.close();
    const again = await world({ AMTP_DATA: dataDir });
    try {
      assert.equal((await status(again, "other", "1.0.0")).state, "disabled");
      assert.equal((await status(again, "probe", "1.0.0")).default, true);
      assert.equal((await status(again, "probe", "2.0.0")).isolation, "worker");
      assert.equal(
        (await status(again, "probe", "1.0.0")).isolation,
        "process",
      );
    } finally {
      await again.t.close();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("modules: with AMTP_MODULE_STORAGE=core, storage goes through the core into its database (KV Connect deployments)", async () => {
  const w = await world({ AMTP_MODULE_STORAGE: "core" });
  try {
    const { call } = await w.user("alice@example.org");
    const big = new Uint8Array(300_000).map((_, i) => i % 251);
    assert.equal(
      (await call("probe", "put", { version: "1.0.0", key: "big", value: big }))
        .error,
      0,
    );
    const back = (await call("probe", "get", { version: "1.0.0", key: "big" }))
      .data as { value: Uint8Array };
    assert.equal(back.value.byteLength, big.byteLength);
    assert.equal(back.value[299_999], big[299_999]);
    // The other module still sees only its own keys.
    assert.equal(
      ((await call("other", "get", { key: "big" })).data as { value: unknown })
        .value,
      null,
    );
    const tooBig = await call("probe", "put", {
      version: "1.0.0",
      key: "huge",
      value: new Uint8Array(800_000),
    });
    assert.equal(tooBig.error, ErrorCode.LIMIT_EXCEEDED);
    // No database of its own: the core's holds the data.
    assert.equal(
      await Deno.stat(`${w.t.dataDir}/modules`).then(() => true, () => false),
      false,
    );
    const core = await Deno.openKv(`${w.t.dataDir}/amtp.kv`);
    const head = await core.get<{ size: number }>([
      "mod",
      "probe",
      "d",
      "shared",
      "big",
    ]);
    core.close();
    assert.ok((head.value?.size ?? 0) > 300_000);
  } finally {
    await w.t.close();
  }
});
