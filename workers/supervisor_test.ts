import assert from "node:assert/strict";
import { Logger } from "../core/log/mod.ts";
import { ModuleStateStore } from "../kv/modules.ts";
import {
  type LoopbackChannel,
  loopbackModule,
} from "../testing/module_loopback.ts";
import { ImportRefusedError } from "./isolation/imports.ts";
import { type Manifest, parseManifest } from "./manifest.ts";
import type { ModuleDefinition } from "./sdk/mod.ts";
import { Supervisor } from "./supervisor.ts";
import { ModuleTable, type Slot } from "./table.ts";

const QUICK = { intervalMs: 20, toleranceMs: 100, startMs: 2000 };

function manifest(commands = ["hello"]): Manifest {
  return parseManifest({ name: "m", version: "1.0.0", commands }, "/nowhere");
}

const hello: ModuleDefinition = { commands: { hello: () => ({ hi: true }) } };

async function until(
  what: () => boolean | Promise<boolean>,
  label: string,
): Promise<void> {
  for (let i = 0; i < 500 && !(await what()); i++) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  assert.ok(await what(), `never: ${label}`);
}

/** A supervisor over one slot whose copies are loopback modules (`open` may be replaced). */
async function supervised(options: {
  definition?: ModuleDefinition;
  open?: (slot: Slot) => Promise<LoopbackChannel>;
  isolation?: "worker" | "process";
  now?: () => number;
} = {}) {
  const kv = await Deno.openKv(":memory:");
  const lines: string[] = [];
  const log = new Logger({ sink: (line) => lines.push(line) });
  const store = new ModuleStateStore(kv);
  const table = new ModuleTable(store, () => true);
  const channels: LoopbackChannel[] = [];
  const opened: Slot[] = [];
  const supervisor = new Supervisor({
    table,
    log,
    open: options.open ?? ((slot) => {
      opened.push(slot);
      const channel = loopbackModule(options.definition ?? hello);
      channels.push(channel);
      return Promise.resolve(channel);
    }),
    serve: () => null,
    storePath: () => undefined,
    heartbeat: QUICK,
    restartBaseMs: 10,
    hangsBeforeProcess: 1,
    now: options.now,
  });
  const slot = table.add(
    { ...manifest(), isolation: options.isolation ?? "process" },
    options.isolation === "worker"
      ? { enabled: true, loaded: true, isolation: "worker" }
      : undefined,
  );
  return {
    kv,
    store,
    table,
    slot,
    supervisor,
    channels,
    opened,
    lines,
    async close() {
      await supervisor.close();
      kv.close();
    },
  };
}

Deno.test("supervisor: a copy that said ready and started serves; its failures are restarted with a doubling delay", async () => {
  const s = await supervised();
  try {
    const instance = await s.supervisor.launch(s.slot);
    assert.ok(instance);
    assert.equal(s.slot.state, "running");
    assert.deepEqual(
      await instance.call("hello", { address: "a@x.test", session: "s" }, {}),
      { hi: true },
    );
    // The core asked the module to start with the manifest's commands.
    assert.deepEqual(
      (s.channels[0].sent[0].args as { commands: string[] }[])[0].commands,
      ["hello"],
    );
    s.channels[0].crash("exited with code 1");
    assert.equal(s.slot.state, "restarting");
    assert.match(s.slot.lastError, /crashed: exited with code 1/);
    await until(() => s.slot.state === "running", "restarted");
    assert.equal(s.slot.restarts, 1);
    assert.equal(s.slot.failures, 1);
    s.channels[1].crash("again");
    await until(() => s.slot.state === "running", "restarted twice");
    assert.equal(s.slot.failures, 2, "the second delay doubled");
  } finally {
    await s.close();
  }
});

Deno.test("supervisor: a copy up for a minute has its failures forgotten (injected clock)", async () => {
  let now = 1_000_000;
  const s = await supervised({ now: () => now });
  try {
    await s.supervisor.launch(s.slot);
    s.slot.failures = 5;
    now += 61_000;
    s.channels[0].crash("late crash");
    await until(() => s.slot.state === "running", "restarted");
    assert.equal(s.slot.failures, 1, "the backoff started over");
  } finally {
    await s.close();
  }
});

Deno.test("supervisor: handlers that differ from the manifest, or a refused import, leave the version refused and not restarted", async () => {
  const mismatched = await supervised({
    definition: { commands: { other: () => null } },
  });
  try {
    assert.equal(
      await mismatched.supervisor.launch(mismatched.slot),
      undefined,
    );
    assert.equal(mismatched.slot.state, "refused");
    assert.match(mismatched.slot.lastError, /"hello".*"other"/);
    assert.equal(mismatched.slot.restartTimer, undefined);
    await assert.rejects(
      mismatched.supervisor.launchOrThrow(mismatched.slot),
      /was refused/,
    );
  } finally {
    await mismatched.close();
  }
  const refused = await supervised({
    open: () =>
      Promise.reject(new ImportRefusedError(['mod.ts imports "/etc/passwd"'])),
  });
  try {
    assert.equal(await refused.supervisor.launch(refused.slot), undefined);
    assert.equal(refused.slot.state, "refused");
    assert.equal(refused.slot.restartTimer, undefined);
    assert.ok(refused.lines.some((l) => l.includes("module_refused")));
  } finally {
    await refused.close();
  }
});

Deno.test("supervisor: a Worker that hangs is replaced by a process, for good", async () => {
  const s = await supervised({ isolation: "worker" });
  try {
    await s.supervisor.launch(s.slot);
    assert.equal(s.slot.isolation, "worker");
    s.channels[0].freeze();
    await until(() => s.slot.hangs === 1, "judged hung");
    assert.equal(s.slot.isolation, "process");
    await until(() => s.slot.state === "running", "replaced");
    assert.equal(s.opened.at(-1)!.isolation, "process");
    await until(
      async () =>
        (await s.store.get("m")).versions["1.0.0"]?.isolation === "process",
      "persisted",
    );
    assert.ok(s.lines.some((l) => l.includes("module_isolation_changed")));
  } finally {
    await s.close();
  }
});

Deno.test("supervisor: a new copy is swapped in; the old one finishes its call first", async () => {
  let release!: () => void;
  const held = new Promise<void>((resolve) => release = resolve);
  const s = await supervised({
    definition: {
      commands: {
        hello: async () => {
          await held;
          return { hi: "late" };
        },
      },
    },
  });
  try {
    const first = (await s.supervisor.launch(s.slot))!;
    const inFlight = first.call("hello", { address: "a", session: "s" }, {});
    const second = await s.supervisor.launch(s.slot);
    assert.ok(second && second !== first);
    assert.equal(s.slot.instance, second);
    release();
    assert.deepEqual(await inFlight, { hi: "late" });
    await until(() => first.state === "down", "old copy stopped");
  } finally {
    await s.close();
  }
});
