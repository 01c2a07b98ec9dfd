/**
 * Where a module round trip's time goes, without a client or a session:
 * `deno run -A --unstable-kv --unstable-worker-options
 * bench/bridge_profile.ts [ms] [parts]` runs the example module in a real Worker
 * through the real host (workers/host.ts) and times, one after the other:
 *
 * - `raw`: a bare Worker that posts back the bytes it is sent (the floor of
 *   two postMessage hops);
 * - `codec`: the BSON of one echo's call and answer, encoded and decoded on
 *   each side (4 encodes, 4 decodes), in one thread;
 * - `inthread`: the host's and the SDK's JavaScript of one echo, the module
 *   in this thread (its documents encoded, delivered a microtask later and
 *   decoded): the bridge's own work without the Worker's;
 * - `route`: `router.route` of `echo`, as a client's call reaches it.
 *
 * For each: p50 of sequential calls and CPU per call over all threads (from
 * `/proc/self/task/*\/stat`, robust under other load), as JSON lines.
 *
 * @module
 */

import { Logger } from "../core/log/mod.ts";
import {
  decodeDocument,
  type Document,
  encodeDocument,
} from "../core/wire/mod.ts";
import { ModuleInstance } from "../workers/instance.ts";
import { ModuleRouter } from "../workers/router.ts";
import { ModuleTable } from "../workers/table.ts";
import { ModuleStateStore } from "../kv/modules.ts";
import { parseManifest } from "../workers/manifest.ts";
import { serveModule } from "../workers/sdk/mod.ts";
import { ModuleHost } from "../workers/host.ts";
import type { ServiceImplementation } from "../workers/services.ts";
import type { HandlerContext } from "../core/protocol/mod.ts";
import { percentile } from "./measure.ts";
import { cpuSince, threadCpu } from "../testing/process.ts";

const MS = Number(Deno.args[0] ?? 3000);
/** The parts to run (all by default), e.g. `route`. */
const ONLY = new Set(
  (Deno.args[1] ?? "raw,codec,inthread,inthread-route,instance,route").split(
    ",",
  ),
);

async function measure(
  name: string,
  work: () => Promise<unknown> | unknown,
): Promise<void> {
  if (!ONLY.has(name)) return;
  for (const until = performance.now() + 500; performance.now() < until;) {
    await work();
  }
  const samples: number[] = [];
  const before = threadCpu(Deno.pid);
  const end = performance.now() + MS;
  while (performance.now() < end) {
    const t0 = performance.now();
    await work();
    samples.push(performance.now() - t0);
  }
  const cpu = cpuSince(before, threadCpu(Deno.pid));
  console.log(JSON.stringify({
    name,
    calls: samples.length,
    p50_us: Math.round(percentile(samples, 0.5) * 1000),
    cpu_us_per_call: Math.round(cpu.total / samples.length * 1e6),
    threads: Object.fromEntries(
      cpu.threads.slice(0, 4).map((
        [t, s],
      ) => [t, Math.round(s / samples.length * 1e6)]),
    ),
  }));
}

// The floor: two postMessage hops of a small buffer, moved.
const echoUrl = URL.createObjectURL(
  new Blob([
    "self.onmessage = (e) => { const b = new Uint8Array(e.data); self.postMessage(b, [b.buffer]); };",
  ], { type: "text/javascript" }),
);
const raw = new Worker(echoUrl, { type: "module" });
let rawAnswer: (() => void) | undefined;
raw.onmessage = () => rawAnswer!();
await measure("raw", () =>
  new Promise<void>((resolve) => {
    rawAnswer = resolve;
    const bytes = new Uint8Array(120);
    raw.postMessage(bytes, [bytes.buffer]);
  }));
raw.terminate();

// The BSON of one echo, both ways, both sides.
const caller = { address: "u@bench.test", session: "s1", ticket: "t" };
await measure("codec", () => {
  const call = {
    t: "rpc",
    id: 7,
    method: "call",
    args: ["echo", caller, { text: "hi" }],
  };
  decodeDocument(new Uint8Array(encodeDocument(call)));
  const ret = {
    t: "ret",
    id: 7,
    value: { text: "hi", caller: caller.address },
  };
  decodeDocument(new Uint8Array(encodeDocument(ret)));
  decodeDocument(new Uint8Array(encodeDocument(call)));
  decodeDocument(new Uint8Array(encodeDocument(ret)));
});

const ctx = {
  session: { id: "s1" },
  caller: { name: "u@bench.test", kind: "user" },
  log: new Logger({ sink: () => {} }),
} as unknown as HandlerContext;

// The host's and the SDK's own work, the module in this thread.
if (ONLY.has("inthread")) {
  let toHost: ((doc: Document) => void) | undefined;
  let toModule: ((doc: Document) => void) | undefined;
  const carry = (doc: Document, to: () => (doc: Document) => void) => {
    const bytes = new Uint8Array(encodeDocument(doc));
    queueMicrotask(() => to()(decodeDocument(bytes)));
  };
  serveModule({
    commands: {
      echo: (params, ctx) => ({
        text: params.text,
        caller: ctx.caller.address,
      }),
    },
  }, {
    send: (doc) => carry(doc, () => toHost!),
    listen: (handler) => toModule = handler,
  });
  const instance = new ModuleInstance(
    parseManifest({ name: "m", version: "1.0.0", commands: ["echo"] }, "/m"),
    {
      killable: true,
      send: (doc) => carry(doc, () => toModule!),
      onMessage: (handler) => toHost = handler,
      onExit: () => {},
      stop: () => {},
    },
    {
      isolation: "worker",
      serve: () => null,
      log: new Logger({ sink: () => {} }),
      heartbeat: { intervalMs: 1000, toleranceMs: 3000, startMs: 5000 },
    },
  );
  await instance.start();
  await measure(
    "inthread",
    () => instance.call("echo", caller, { text: "hi" }),
  );
  // The router over that copy.
  const table = new ModuleTable(
    new ModuleStateStore(await Deno.openKv(":memory:")),
    () => true,
  );
  const slot = table.add(
    parseManifest({ name: "m", version: "1.0.0", commands: ["echo"] }, "/m"),
  );
  slot.instance = instance;
  slot.state = "running";
  const router = new ModuleRouter(table);
  await measure("inthread-route", () =>
    router.route({
      command: "echo",
      module: "m",
      user_token: "x",
      requestID: 1,
      text: "hi",
    }, ctx));
  instance.stop();
}

// The real host, the example module in a Worker.
const root = await Deno.makeTempDir({ prefix: "amtp-bridge-" });
const kv = await Deno.openKv(`${root}/kv`);
const host = new ModuleHost({
  root: new URL("../modules", import.meta.url).pathname,
  kv,
  log: new Logger({ sink: () => {} }),
  services: {} as ServiceImplementation,
  denoConfig: new URL("../deno.json", import.meta.url).pathname,
  off: ["messages", "rules", "smtp"],
  stores: Deno.env.get("BRIDGE_STORES") ? `${root}/stores` : undefined,
});
await host.start();
const copy = host.router.pick("example").instance as ModuleInstance;
await measure("instance", () => copy.call("echo", caller, { text: "hi" }));
await measure("route", () =>
  host.router.route({
    command: "echo",
    module: "example",
    user_token: "x",
    requestID: 1,
    text: "hi",
  }, ctx));
await host.close();
kv.close();
await Deno.remove(root, { recursive: true });
