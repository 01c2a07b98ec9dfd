import assert from "node:assert/strict";
import { Logger } from "../core/log/mod.ts";
import { ErrorCode, ProtocolError } from "../core/protocol/mod.ts";
import { loopbackModule } from "../testing/module_loopback.ts";
import { ModuleInstance } from "./instance.ts";
import { parseManifest } from "./manifest.ts";

const caller = { address: "a@x.test", session: "s" };

/** A copy of a module whose `wait` answers after `params.ms`, with a 100 ms timeout. */
async function started(): Promise<ModuleInstance> {
  const instance = new ModuleInstance(
    parseManifest(
      { name: "m", version: "1.0.0", commands: ["wait"], timeout_ms: 100 },
      "/nowhere",
    ),
    loopbackModule({
      commands: {
        wait: async (params) => {
          await new Promise((resolve) =>
            setTimeout(resolve, Number(params.ms))
          );
          return { waited: params.ms };
        },
      },
    }),
    {
      isolation: "worker",
      serve: () => null,
      log: new Logger({ sink: () => {} }),
      heartbeat: { intervalMs: 20, toleranceMs: 2000, startMs: 2000 },
    },
  );
  await instance.start();
  return instance;
}

function code(error: unknown): number | undefined {
  return error instanceof ProtocolError ? error.code : undefined;
}

Deno.test("instance: every call in flight gets its own deadline from the one timer", async () => {
  const instance = await started();
  try {
    const t0 = performance.now();
    const first = instance.call("wait", caller, { ms: 800 });
    await new Promise((resolve) => setTimeout(resolve, 40));
    const second = instance.call("wait", caller, { ms: 800 });
    const quick = instance.call("wait", caller, { ms: 5 });
    assert.equal(instance.inflight, 3);
    // The quick one answers well before its deadline.
    assert.deepEqual(await quick, { waited: 5 });
    // Both slow ones time out (alive: pings answered), the second after
    // the first and long before its handler would answer.
    await assert.rejects(first, (e) => code(e) === ErrorCode.TIMEOUT);
    const firstAt = performance.now() - t0;
    await assert.rejects(second, (e) => code(e) === ErrorCode.TIMEOUT);
    const secondAt = performance.now() - t0;
    assert.ok(firstAt >= 100, `first timed out after ${firstAt} ms`);
    assert.ok(secondAt >= 140, `second timed out after ${secondAt} ms`);
    assert.ok(secondAt < 700, `second timed out only after ${secondAt} ms`);
    assert.equal(instance.inflight, 0);
    // A call after the quiet spell has a deadline of its own again.
    await assert.rejects(
      instance.call("wait", caller, { ms: 800 }),
      (e) => code(e) === ErrorCode.TIMEOUT,
    );
    assert.deepEqual(await instance.call("wait", caller, { ms: 1 }), {
      waited: 1,
    });
  } finally {
    instance.stop();
    // The loopback module's handlers still wait on their timers.
    await new Promise((resolve) => setTimeout(resolve, 850));
  }
});
