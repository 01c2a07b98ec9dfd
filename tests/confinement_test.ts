/**
 * Attacks by hostile modules on a real running server (fixtures in
 * tests/fixtures/hostile/): each module tries to read what it may not, to
 * kill, freeze or exhaust the server, or to make a healthy module look hung.
 * None of these modules is shipped with the server, so each runs in its own
 * capped process unless an admin trusts it with a Worker.
 */

import assert from "node:assert/strict";
import { ErrorCode } from "../core/protocol/mod.ts";
import { MEMORY_SLACK_MB } from "../workers/isolation/limits.ts";
import {
  adminCaller,
  bootstrapKey,
  login,
  startTestServer,
  type TestServer,
  userMaker,
  waitFor,
} from "../testing/helpers.ts";

const HOSTILE = new URL("./fixtures/hostile", import.meta.url).pathname;
const SECRET = "fixture-server-key-do-not-leak";

interface World {
  t: TestServer;
  admin: (
    command: string,
    params?: Record<string, unknown>,
  ) => Promise<Record<string, unknown>>;
  adminRequest: (
    command: string,
    params?: Record<string, unknown>,
  ) => Promise<{ error: number; message?: string; data?: unknown }>;
  call: (
    module: string,
    command: string,
    params?: Record<string, unknown>,
  ) => Promise<{ error: number; message?: string; data?: unknown }>;
  status: (name: string) => Promise<Record<string, unknown>>;
}

async function world(): Promise<World> {
  const t = await startTestServer({ AMTP_MODULES: HOSTILE }, {
    moduleHost: {
      heartbeat: { intervalMs: 200, toleranceMs: 1000, startMs: 15_000 },
      restartBaseMs: 50,
    },
  });
  const adminClient = await t.connect();
  const adminToken = await login(
    adminClient,
    "admin",
    "admin",
    await bootstrapKey(t.dataDir),
  );
  const admin = (command: string, params: Record<string, unknown> = {}) =>
    adminClient.call<Record<string, unknown>>(command, {
      admin_token: adminToken,
      ...params,
    });
  await admin("admin_add_domain", { domain: "example.org" });
  const key = await userMaker(admin)("mallory@example.org");
  const client = await t.connect();
  const token = await login(client, "user", "mallory@example.org", key);
  return {
    t,
    admin,
    adminRequest: (command, params = {}) =>
      adminClient.request(command, { admin_token: adminToken, ...params }),
    call: (module, command, params = {}) =>
      client.request(command, { module, user_token: token, ...params }),
    async status(name) {
      const { modules } = await admin("admin_get_modules") as {
        modules: Record<string, unknown>[];
      };
      return modules.find((m) => m.name === name)!;
    },
  };
}

Deno.test("confinement: a module that imports a file outside its folder or a remote module is refused before it starts, the import named", async () => {
  const w = await world();
  try {
    // Nothing is read: the modules never run.
    for (const name of ["static_key", "static_passwd", "literal_dynamic"]) {
      const leak = await w.call(name, "leak");
      assert.ok(!JSON.stringify(leak).includes(SECRET), `${name} leaked`);
      assert.ok(!JSON.stringify(leak).includes("root:"), `${name} leaked`);
      assert.equal(leak.error, ErrorCode.MODULE_UNAVAILABLE, name);
    }
    const refused = {
      static_key: /mod\.ts imports "\.\.\/\.\.\/server_key\.json"/,
      static_passwd: /mod\.ts imports "\/etc\/passwd"/,
      literal_dynamic: /mod\.ts imports "\.\.\/\.\.\/server_key\.json"/,
      remote:
        /https:\/\/deno\.land\/std@0\.224\.0\/version\.ts.*permissions\.import/,
    };
    for (const [name, named] of Object.entries(refused)) {
      const status = await w.status(name);
      assert.equal(status.state, "refused", `${name}: ${status.last_error}`);
      assert.match(String(status.last_error), named);
      assert.ok(
        w.t.logs.some((l) =>
          l.includes("module_refused") && l.includes(`module=${name}`)
        ),
        `${name}: no module_refused line`,
      );
    }
    // Loading it again answers error 8 naming the import.
    await w.admin("admin_unload_module", {
      name: "static_key",
      version: "1.0.0",
    });
    const load = await w.adminRequest("admin_load_module", {
      name: "static_key",
      version: "1.0.0",
    });
    assert.equal(load.error, ErrorCode.MODULE_UNAVAILABLE);
    assert.match(load.message ?? "", /refused.*"\.\.\/\.\.\/server_key\.json"/);
    // A module with a clean graph beside them runs, in a process: it was not
    // shipped with the server, whatever its manifest says.
    const steady = await w.status("steady");
    assert.equal(steady.state, "running");
    assert.equal(steady.isolation, "process");
    assert.equal(steady.shipped, false);
    assert.equal((await w.call("steady", "hello")).error, 0);
  } finally {
    await w.t.close();
  }
});

Deno.test("confinement: a symbolic link out of a module's folder is refused; a module outside the server's tree may import the SDK by its path", async () => {
  const root = await Deno.makeTempDir({ prefix: "amtp-modules-" });
  const sdk = new URL("../workers/sdk/mod.ts", import.meta.url).href;
  try {
    for (
      const [name, body] of [
        ["linker", 'import key from "./key.json" with { type: "json" };'],
        ["clean", "const key = null;"],
      ]
    ) {
      const dir = `${root}/${name}/1.0.0`;
      await Deno.mkdir(dir, { recursive: true });
      await Deno.writeTextFile(
        `${dir}/module.json`,
        JSON.stringify({ name, version: "1.0.0", commands: ["leak"] }),
      );
      await Deno.writeTextFile(
        `${dir}/mod.ts`,
        `${body}\nimport { serveModule } from "${sdk}";\n` +
          "serveModule({ commands: { leak: () => ({ key }) } });\n",
      );
    }
    await Deno.symlink(
      `${HOSTILE}/server_key.json`,
      `${root}/linker/1.0.0/key.json`,
    );
    const t = await startTestServer({ AMTP_MODULES: root });
    try {
      const admin = await adminCaller(await t.connect(), t.dataDir);
      const { modules } = await admin("admin_get_modules") as {
        modules: Record<string, unknown>[];
      };
      const linker = modules.find((m) => m.name === "linker")!;
      assert.equal(linker.state, "refused", String(linker.last_error));
      assert.match(
        String(linker.last_error),
        /mod\.ts imports "\.\/key\.json".*outside the module's folder \(.*server_key\.json\)/,
      );
      assert.equal(modules.find((m) => m.name === "clean")!.state, "running");
    } finally {
      await t.close();
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("confinement: imports computed at run time (a file, /etc/passwd, a data: URL module, a remote module) are refused", async () => {
  const w = await world();
  try {
    for (
      const target of ["computed_file", "computed_passwd", "data_url", "remote"]
    ) {
      const r = await w.call("loader", "load", { target });
      assert.notEqual(r.error, 0, `${target} loaded: ${JSON.stringify(r)}`);
      assert.ok(!JSON.stringify(r).includes(SECRET), target);
      assert.ok(!JSON.stringify(r).includes("root:"), target);
    }
    assert.equal((await w.status("loader")).state, "running");
  } finally {
    await w.t.close();
  }
});

Deno.test("confinement: a module cannot kill or stop the server (SIGKILL, SIGSTOP of its pid)", async () => {
  const w = await world();
  try {
    for (const signal of ["SIGKILL", "SIGSTOP"]) {
      const r = await w.call("killer", "signal", { pid: Deno.pid, signal });
      assert.equal(r.error, ErrorCode.INTERNAL, `${signal}: ${r.message}`);
      assert.match(r.message ?? "", /NotCapable|run access/);
    }
    // The server still answers, and the module too.
    assert.equal((await w.call("steady", "hello")).error, 0);
    assert.equal(
      (await w.call("killer", "signal", { pid: 0, signal: "SIGCONT" }))
        .error,
      ErrorCode.INTERNAL,
    );
  } finally {
    await w.t.close();
  }
});

Deno.test("confinement: a Worker module's documents in memory it keeps sharing (a SharedArrayBuffer) are refused, not read in place", async () => {
  const w = await world();
  try {
    // As a process it answers (a pipe carries no shared memory).
    assert.equal((await w.call("sharer", "hello")).error, 0);
    const moved = await w.adminRequest("admin_set_module_isolation", {
      name: "sharer",
      version: "1.0.0",
      isolation: "worker",
    });
    // The Worker copy's first document (its `ready`) stops it; the copy
    // that ran before keeps serving.
    assert.notEqual(moved.error, 0, "a Worker copy started");
    assert.match(moved.message ?? "", /unreadable document/);
    assert.match(
      String((await w.status("sharer")).last_error),
      /unreadable document/,
    );
    assert.equal((await w.call("sharer", "hello")).error, 0);
    assert.equal((await w.call("steady", "hello")).error, 0);
  } finally {
    await w.t.close();
  }
});

Deno.test("confinement: a module's ArrayBuffers stay within its memory_mb (plus slack); the server survives", async () => {
  const w = await world();
  try {
    // The module stops at 1.5 GB by itself, so that an uncapped run does no harm.
    const r = await w.call("hog", "allocate", { limit_mb: 1536 });
    assert.equal(r.error, 0, r.message);
    const { allocated_mb, error } = r.data as {
      allocated_mb: number;
      error: string;
    };
    assert.ok(
      allocated_mb < 128 + MEMORY_SLACK_MB,
      `allocated ${allocated_mb} MB with memory_mb 128`,
    );
    assert.match(error, /allocation failed/);
    assert.equal((await w.call("steady", "hello")).error, 0);
  } finally {
    await w.t.close();
  }
});

Deno.test("confinement: a module in a busy loop is detected and its process is gone", async () => {
  const w = await world();
  try {
    const { pid } = (await w.call("spinner", "pid")).data as { pid: number };
    assert.notEqual(pid, Deno.pid, "the module runs in the server's process");
    const spun = await w.call("spinner", "spin");
    assert.equal(spun.error, ErrorCode.MODULE_UNAVAILABLE, spun.message);
    await waitFor(
      () => Deno.stat(`/proc/${pid}`).then(() => false, () => true),
      5000,
      `process ${pid} to be gone`,
    );
    assert.equal((await w.status("spinner")).hangs, 1);
    await waitFor(
      async () => (await w.call("spinner", "pid")).error === 0,
      20_000,
      "a fresh copy",
    );
  } finally {
    await w.t.close();
  }
});

for (const placement of ["process", "worker"] as const) {
  Deno.test(`confinement (${placement}): a flood of 200,000 messages stops the flooder, not the healthy module beside it`, async () => {
    const w = await world();
    try {
      if (placement === "worker") {
        for (const name of ["flooder", "steady"]) {
          await w.admin("admin_set_module_isolation", {
            name,
            version: "1.0.0",
            isolation: "worker",
          });
        }
        assert.ok(w.t.logs.some((l) => l.includes("module_trusted")));
      }
      let flooding = true;
      const errors: string[] = [];
      let calls = 0;
      const healthy = (async () => {
        while (flooding) {
          const r = await w.call("steady", "hello");
          calls++;
          if (r.error !== 0) errors.push(`${r.error} ${r.message}`);
          await new Promise((resolve) => setTimeout(resolve, 20));
        }
      })();
      const flood = await w.call("flooder", "flood", { count: 200_000 });
      // Let the heartbeats run past the flood before judging.
      await new Promise((resolve) => setTimeout(resolve, 1500));
      flooding = false;
      await healthy;
      // The healthy module served throughout and was never judged hung.
      const steady = await w.status("steady");
      assert.equal(steady.hangs, 0, String(steady.last_error));
      assert.equal(steady.restarts, 0);
      assert.ok(
        !w.t.logs.some((l) =>
          l.includes("module_down") && l.includes("module=steady")
        ),
      );
      assert.deepEqual(errors, []);
      assert.ok(calls > 10, `calls ${calls}`);
      // The flooder was stopped for what it sent.
      assert.equal(flood.error, ErrorCode.MODULE_UNAVAILABLE, flood.message);
      assert.match(
        String((await w.status("flooder")).last_error),
        /misbehaving/,
      );
      // The excess was not logged.
      const logged = w.t.logs.filter((l) => l.includes("module_flood")).length;
      assert.ok(logged < 1000, `${logged} flood lines logged`);
    } finally {
      await w.t.close();
    }
  });
}
