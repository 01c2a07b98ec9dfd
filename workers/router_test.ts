import assert from "node:assert/strict";
import { Logger } from "../core/log/mod.ts";
import {
  ErrorCode,
  type HandlerContext,
  ProtocolError,
} from "../core/protocol/mod.ts";
import { ModuleStateStore } from "../kv/modules.ts";
import { loopbackModule } from "../testing/module_loopback.ts";
import { parseManifest } from "./manifest.ts";
import { ModuleRouter } from "./router.ts";
import type { InboundResult, ModuleDefinition } from "./sdk/mod.ts";
import { Supervisor } from "./supervisor.ts";
import { ModuleTable } from "./table.ts";

/** Versions of module `m`, each a loopback module reporting its version. */
async function routed(
  versions: Record<string, Partial<ModuleDefinition>>,
) {
  const kv = await Deno.openKv(":memory:");
  const table = new ModuleTable(new ModuleStateStore(kv), () => true);
  const definitions = new Map<string, ModuleDefinition>();
  const supervisor = new Supervisor({
    table,
    log: new Logger({ sink: () => {} }),
    open: (slot) =>
      Promise.resolve(
        loopbackModule(definitions.get(slot.manifest.version)!),
      ),
    serve: () => null,
    storePath: () => undefined,
    heartbeat: { intervalMs: 1000, toleranceMs: 3000, startMs: 2000 },
    restartBaseMs: 10,
    hangsBeforeProcess: 1,
  });
  for (const [version, extra] of Object.entries(versions)) {
    definitions.set(version, {
      commands: {
        which: (params, ctx) => ({ version, params, caller: ctx.caller }),
        fail: () => {
          throw new Error("no");
        },
      },
      ...extra,
    });
    const slot = table.add(
      parseManifest(
        { name: "m", version, commands: ["which", "fail"] },
        "/nowhere",
      ),
    );
    await supervisor.launch(slot);
  }
  return {
    table,
    router: new ModuleRouter(table),
    async close() {
      await supervisor.close();
      kv.close();
    },
  };
}

const ctx = {
  caller: { kind: "user", name: "alice@x.test", tokenHash: "h" },
  session: {
    id: "session-1",
    transport: "test",
    remoteAddr: "",
    data: new Map(),
  },
  log: new Logger({ sink: () => {} }),
} as HandlerContext;

function code(error: unknown): number {
  assert.ok(error instanceof ProtocolError, String(error));
  return error.code;
}

Deno.test("router: a range picks the highest match, no range the default or else the highest enabled", async () => {
  const r = await routed({ "1.0.0": {}, "1.2.0": {}, "2.0.0": {} });
  try {
    const version = (range?: string) =>
      r.router.pick("m", range).manifest.version;
    assert.equal(version(), "2.0.0");
    assert.equal(version("^1"), "1.2.0");
    assert.equal(version("~1.0"), "1.0.0");
    r.table.setDefault("m", "1.0.0");
    assert.equal(version(), "1.0.0");
    r.table.get("m", "1.0.0")!.enabled = false;
    assert.equal(version(), "2.0.0", "a disabled default does not serve");
    assert.equal(
      code(catching(() => version("^3"))),
      ErrorCode.MODULE_UNAVAILABLE,
    );
    assert.equal(
      code(catching(() => version("not a range"))),
      ErrorCode.INVALID_PARAMETER,
    );
    assert.equal(
      code(catching(() => r.router.pick("nothing"))),
      ErrorCode.MODULE_UNAVAILABLE,
    );
    assert.deepEqual(r.router.available(), [
      { name: "m", versions: ["1.2.0", "2.0.0"], default: "1.0.0" },
    ]);
  } finally {
    await r.close();
  }
});

function catching(work: () => unknown): unknown {
  try {
    work();
  } catch (error) {
    return error;
  }
  assert.fail("did not throw");
}

Deno.test("router: a call carries the parameters without the envelope and the caller from the token; figures are kept", async () => {
  const r = await routed({ "1.0.0": {} });
  try {
    const answer = await r.router.route({
      command: "which",
      module: "m",
      version: "1",
      requestID: 9,
      user_token: "secret",
      caller: { address: "mallory@x.test" },
      text: "hi",
    }, ctx) as Record<string, unknown>;
    assert.deepEqual(answer.params, {
      caller: { address: "mallory@x.test" },
      text: "hi",
    });
    const { ticket, ...caller } = answer.caller as Record<string, unknown>;
    assert.deepEqual(caller, {
      address: "alice@x.test",
      session: "session-1",
    });
    // Good while the call runs only (module-to-module calls on its behalf).
    assert.match(String(ticket), /^[0-9a-f-]{36}$/);
    await assert.rejects(
      r.router.route({ command: "fail", module: "m" }, ctx),
      (e) => code(e) === ErrorCode.INTERNAL,
    );
    await assert.rejects(
      r.router.route({ command: "nope", module: "m" }, ctx),
      (e) => code(e) === ErrorCode.UNKNOWN_COMMAND,
    );
    await assert.rejects(
      r.router.route({ command: "which", module: "m", version: 1 }, ctx),
      (e) => code(e) === ErrorCode.INVALID_PARAMETER,
    );
    const slot = r.table.get("m", "1.0.0")!;
    assert.equal(slot.calls, 2);
    assert.equal(slot.errors, 1);
    assert.equal(slot.latencies.length, 2);
    // A version that is not running is unavailable, not an error of the module.
    slot.instance!.stop();
    await assert.rejects(
      r.router.route({ command: "which", module: "m" }, ctx),
      (e) => code(e) === ErrorCode.MODULE_UNAVAILABLE,
    );
  } finally {
    await r.close();
  }
});

Deno.test("router: deliveries go to the default version's inbound; its answer is checked", async () => {
  const delivered: InboundResult = {
    recipients: [{ address: "bob@x.test", status: "delivered" }],
  };
  const r = await routed({
    "1.0.0": {},
    "2.0.0": { inbound: () => Promise.resolve(delivered) },
    "3.0.0": {
      inbound: () =>
        Promise.resolve({ recipients: "all" } as unknown as InboundResult),
    },
  });
  const delivery = {
    kind: "deliver" as const,
    from: "carol@remote.test",
    to: ["bob@x.test"],
    id: "d1",
    payload: {},
    peer: "mx.remote.test",
  };
  try {
    r.table.setDefault("m", "2.0.0");
    assert.deepEqual(await r.router.inbound("m", delivery), delivered);
    r.table.setDefault("m", "1.0.0");
    await assert.rejects(
      r.router.inbound("m", delivery),
      (e) => code(e) === ErrorCode.MODULE_UNAVAILABLE,
    );
    r.table.setDefault("m", "3.0.0");
    await assert.rejects(
      r.router.inbound("m", delivery),
      (e) =>
        code(e) === ErrorCode.INTERNAL &&
        /recipients/.test((e as Error).message),
    );
  } finally {
    await r.close();
  }
});
