/**
 * `deno task bench [--full] [--out FILE] [--only SECTIONS]`: real servers on loopback, real
 * clients, every figure next to a baseline measured in the same run. Prints a
 * table (figure, value, baseline, ratio, goal) and writes the same as JSON
 * (default `bench/results/latest.json`).
 *
 * @module
 */

import { openWebSocket, openWebTransport } from "../client/transport.ts";
import { AmtpClient } from "../client/mod.ts";
import { openNodeWebSocket } from "../client/connect.ts";
import { createCertificate } from "../core/tls/cert.ts";
import { startWorld } from "../testing/federation_world.ts";
import { login } from "../testing/helpers.ts";
import { mailSession } from "../testing/mail.ts";
import { cpuSince, rss, threadCpu } from "../testing/process.ts";
import { createHash } from "node:crypto";
import { startAmtp } from "../testing/server.ts";
import { startEmailWorld } from "../testing/email_world.ts";
import { postfixAvailable } from "../testing/postfix.ts";
import {
  BROWSER_DIR,
  CHROMIUM,
  ensureBrowserTools,
} from "../testing/browser.ts";
import { generateLoginKeyPair } from "../shared/login/algorithms.ts";
import { toPem } from "../shared/pem.ts";
import type { HolderOrder } from "./session_holder.ts";
import { fillMailbox, word } from "./mailbox_fill.ts";
import { benchMessage, FLOOD_ENV, serverCpu, smtpFlood } from "./smtp_flood.ts";
import {
  concurrent,
  kvDeliveryRate,
  percentile,
  pipelined,
  rawPipelined,
  rawSequential,
  sequential,
} from "./measure.ts";

const FULL = Deno.args.includes("--full");
const OUT = (() => {
  const i = Deno.args.indexOf("--out");
  return i >= 0
    ? Deno.args[i + 1]
    : new URL("./results/latest.json", import.meta.url).pathname;
})();
/** `--only a,b`: run just these sections (ratios need the ceiling section). */
const ONLY = (() => {
  const i = Deno.args.indexOf("--only");
  return i >= 0 ? Deno.args[i + 1].split(",") : undefined;
})();
const SEQ_MS = FULL ? 5000 : 1500;
const PIPE = FULL ? 20_000 : 5000;

/** One row of the table. */
interface Figure {
  group: string;
  name: string;
  value: number;
  unit: string;
  baseline?: number;
  baselineName?: string;
  goal?: string;
  met?: boolean;
  note?: string;
}

const figures: Figure[] = [];
function add(f: Figure): void {
  figures.push(f);
  const ratio = f.baseline
    ? ` (${(f.value / f.baseline * 100).toFixed(0)}% of ${fmt(f.baseline)})`
    : "";
  console.error(
    `  ${f.group}: ${f.name} = ${fmt(f.value)} ${f.unit}${ratio}${
      f.met === undefined ? "" : f.met ? " ok" : " BELOW GOAL"
    }`,
  );
}

function fmt(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  if (Math.abs(n) >= 100) return Math.round(n).toLocaleString("en-US");
  return n.toFixed(n < 1 ? 3 : 1);
}

async function section(name: string, work: () => Promise<void>): Promise<void> {
  if (ONLY && !ONLY.includes(name)) return;
  console.error(`${name} ...`);
  try {
    await work();
  } catch (error) {
    add({
      group: name,
      name: "(failed)",
      value: NaN,
      unit: "",
      note: String(error).slice(0, 200),
    });
  }
}

const root = await Deno.makeTempDir({ prefix: "amtp-bench-" });
const certDir = `${root}/echo`;
await Deno.mkdir(certDir);
const echoCert = await createCertificate({
  names: ["localhost", "127.0.0.1"],
  days: 13,
});
await Deno.writeTextFile(`${certDir}/cert.pem`, echoCert.certPem);
await Deno.writeTextFile(`${certDir}/key.pem`, echoCert.keyPem);

async function startEcho(): Promise<
  {
    port: number;
    transportPort: number;
    child: Deno.ChildProcess;
    stop(): Promise<void>;
  }
> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-net",
      "-A",
      new URL("./echo_server.ts", import.meta.url).pathname,
      certDir,
    ],
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) text += (await reader.read()).value ?? "";
  reader.releaseLock();
  const [, port, transportPort] = text.match(/listening (\d+) (\d+)/)!
    .map(Number);
  return {
    port,
    transportPort,
    child,
    async stop() {
      child.kill("SIGKILL");
      await child.status;
      await child.stdout.cancel().catch(() => {});
    },
  };
}

/**
 * Raw echo figures: WebTransport, Deno's own WebSocket (`Deno.serve`), and
 * WebSocket through the AMTP server's TCP transport (`tcp`), the baseline of
 * the AMTP WebSocket figures.
 */
const raw = {
  wtSeq: 0,
  wtPipe: 0,
  wsSeq: 0,
  wsPipe: 0,
  tcpSeq: 0,
  tcpPipe: 0,
};

// 1. The ceiling: a bare echo server.
await section("ceiling", async () => {
  const echo = await startEcho();
  try {
    const url = `https://127.0.0.1:${echo.port}/amtp`;
    const openWt = () => openWebTransport({ url, certHash: echoCert.sha256 });
    const openWs = () =>
      openWebSocket({
        url: url.replace("https", "wss"),
        caCerts: [echoCert.certPem],
      });
    // Every figure is taken warm (steady state): one unmeasured run first,
    // here and for the AMTP commands alike.
    const openTcp = () =>
      openWebSocket({
        url: `wss://127.0.0.1:${echo.transportPort}/amtp`,
        caCerts: [echoCert.certPem],
      });
    for (
      const [open, key] of [
        [openWt, "wt"],
        [openWs, "ws"],
        [openTcp, "tcp"],
      ] as const
    ) {
      for (const measured of [false, true]) {
        const a = await open();
        const seq = await rawSequential(a, measured ? SEQ_MS : 300);
        a.close();
        const b = await open();
        const pipe = await rawPipelined(b, PIPE);
        b.close();
        if (measured) {
          raw[`${key}Seq`] = seq;
          raw[`${key}Pipe`] = pipe;
        }
      }
    }
    add({
      group: "ceiling",
      name: "raw WebTransport echo, sequential",
      value: raw.wtSeq,
      unit: "round trips/s",
    });
    add({
      group: "ceiling",
      name: "raw WebTransport echo, pipelined",
      value: raw.wtPipe,
      unit: "msgs/s",
    });
    add({
      group: "ceiling",
      name: "raw WebSocket echo, sequential",
      value: raw.wsSeq,
      unit: "round trips/s",
    });
    add({
      group: "ceiling",
      name: "raw WebSocket echo, pipelined",
      value: raw.wsPipe,
      unit: "msgs/s",
    });
    add({
      group: "ceiling",
      name: "WebSocket echo through the AMTP TCP transport, sequential",
      value: raw.tcpSeq,
      unit: "round trips/s",
      baseline: raw.wsSeq,
      baselineName: "raw Deno WebSocket",
    });
    add({
      group: "ceiling",
      name: "WebSocket echo through the AMTP TCP transport, pipelined",
      value: raw.tcpPipe,
      unit: "msgs/s",
      baseline: raw.wsPipe,
      baselineName: "raw Deno WebSocket",
    });
  } finally {
    await echo.stop();
  }
});

const main = await startAmtp(root, "amtp");
const { server, connect, admin, adminToken, keys, user } = main;

// 2. Command overhead.
await section("commands", async () => {
  for (const transport of ["webtransport", "websocket"] as const) {
    const client = await connect(transport);
    const token = await login(
      client,
      "user",
      "u@bench.test",
      keys.get("u@bench.test")!,
    );
    // WebSocket: against the echo through the same TCP transport, so the
    // ratio is the cost of AMTP above its transport (as for WebTransport).
    const seqRaw = transport === "webtransport" ? raw.wtSeq : raw.tcpSeq;
    const pipeRaw = transport === "webtransport" ? raw.wtPipe : raw.tcpPipe;
    const rawName = transport === "webtransport"
      ? "raw echo"
      : "transport echo";
    const label = transport === "webtransport" ? "WebTransport" : "WebSocket";
    // Warm-up (unmeasured), as for the raw echo.
    await sequential(() => client.request("ping"), 300);
    await pipelined(() => client.request("ping"), PIPE);
    await pipelined(
      () => client.request("user_get_keys", { user_token: token }),
      PIPE,
    );
    const seqPing = await sequential(() => client.request("ping"), SEQ_MS);
    add({
      group: "commands",
      name: `ping, sequential, ${label}`,
      value: seqPing,
      unit: "round trips/s",
      baseline: seqRaw,
      baselineName: rawName,
      goal: ">= 70% of raw",
      met: seqPing >= 0.7 * seqRaw,
    });
    const pipePing = await pipelined(() => client.request("ping"), PIPE);
    add({
      group: "commands",
      name: `ping, pipelined, ${label}`,
      value: pipePing,
      unit: "msgs/s",
      baseline: pipeRaw,
      baselineName: rawName,
      goal: ">= 50% of raw",
      met: pipePing >= 0.5 * pipeRaw,
    });
    const seqUser = await sequential(
      () => client.request("user_get_keys", { user_token: token }),
      SEQ_MS,
    );
    add({
      group: "commands",
      name: `user_get_keys (token + KV), sequential, ${label}`,
      value: seqUser,
      unit: "round trips/s",
      baseline: seqRaw,
      baselineName: rawName,
      goal: ">= 70% of raw",
      met: seqUser >= 0.7 * seqRaw,
    });
    const pipeUser = await pipelined(
      () => client.request("user_get_keys", { user_token: token }),
      PIPE,
    );
    add({
      group: "commands",
      name: `user_get_keys, pipelined, ${label}`,
      value: pipeUser,
      unit: "msgs/s",
      baseline: pipeRaw,
      baselineName: rawName,
      goal: ">= 50% of raw",
      met: pipeUser >= 0.5 * pipeRaw,
    });
    client.close();
  }
});

// 3. Logins.
await section("logins", async () => {
  for (const algorithm of ["HPKE-X25519", "Ed25519", "RSA-OAEP-256"] as const) {
    const addresses = Array.from(
      { length: 50 },
      (_, i) => `l${i}-${algorithm.slice(0, 2).toLowerCase()}@bench.test`,
    );
    for (const a of addresses) await user(a, algorithm);
    const clients = await Promise.all(addresses.map(() => connect()));
    const logIn = (w: number) =>
      login(clients[w], "user", addresses[w], keys.get(addresses[w])!);
    // Warm (unmeasured), as every figure: the first algorithm's logins
    // otherwise pay the compilation of the whole login path.
    await concurrent(50, logIn, 1000);
    let n = 0;
    const cpuBefore = threadCpu(server.child.pid);
    const rate = await concurrent(
      50,
      async (w) => {
        await logIn(w);
        n++;
      },
      SEQ_MS * 2,
    );
    const cpu = cpuSince(cpuBefore, threadCpu(server.child.pid));
    add({
      group: "logins",
      name: `logins, 50 concurrent clients, ${algorithm}`,
      value: rate,
      unit: "logins/s",
      goal: algorithm === "RSA-OAEP-256" ? undefined : ">= 1,000/s",
      met: algorithm === "RSA-OAEP-256" ? undefined : rate >= 1000,
    });
    // Issue 21's goal is the server's share: CPU per login, all threads.
    const perLogin = cpu.total / n * 1e6;
    add({
      group: "logins",
      name: `server CPU per login, ${algorithm} (all threads)`,
      value: perLogin,
      unit: "µs",
      goal: algorithm === "HPKE-X25519" ? "<= 1,000 µs" : undefined,
      met: algorithm === "HPKE-X25519" ? perLogin <= 1000 : undefined,
      note: cpu.threads.slice(0, 4).map(([name, s]) =>
        `${name} ${Math.round(s / n * 1e6)}`
      ).join(", "),
    });
    for (const c of clients) c.close();
  }
});

/** The server CPU per local delivery of this run (µs), the federated one's baseline. */
let localCpu: number | undefined;
/** The local delivery rate of this run, the federation figure's baseline. */
let localRate = 0;

// 4. Local delivery.
await section("delivery", async () => {
  // Baseline: raw sequential KV commits in this run.
  const kv = await Deno.openKv(`${root}/baseline.kv`);
  const commits = await sequential(
    () => kv.set(["k", Math.random()], "x".repeat(1024)),
    SEQ_MS,
  );
  // The ceiling KV puts on delivery: one send's writes, 50 sends per commit.
  const layout = await kvDeliveryRate(kv, 50, SEQ_MS);
  kv.close();
  add({
    group: "delivery",
    name: "raw Deno KV sequential commits (1 KiB)",
    value: commits,
    unit: "commits/s",
  });
  add({
    group: "delivery",
    name: "raw Deno KV: one delivery's 13 records, 50 deliveries per commit",
    value: layout,
    unit: "deliveries/s",
  });
  const senders = Array.from({ length: 50 }, (_, i) => `s${i}@bench.test`);
  const receivers = Array.from({ length: 10 }, (_, i) => `r${i}@bench.test`);
  for (const a of [...senders, ...receivers]) await user(a);
  const sessions = await Promise.all(
    senders.map(async (a) =>
      await mailSession(await connect(), a, keys.get(a)!)
    ),
  );
  const body = "x".repeat(1024);
  let n = 0;
  const cpuBefore = threadCpu(server.child.pid);
  const rate = await concurrent(
    50,
    (w) =>
      sessions[w].call("send", {
        to: [receivers[(w + n++) % receivers.length]],
        subject: "b",
        body,
      }),
    SEQ_MS * 2,
  );
  const cpu = cpuSince(cpuBefore, threadCpu(server.child.pid));
  localRate = rate;
  localCpu = cpu.total / n * 1e6;
  add({
    group: "delivery",
    name:
      "local delivery, 1 KiB, 50 concurrent senders (acknowledged = durable)",
    value: rate,
    unit: "msgs/s",
    baseline: layout,
    baselineName: "raw KV, same records",
    goal: ">= 50% of raw KV",
    met: rate >= layout / 2,
  });
  // Where the time goes: the server's CPU per delivery, by thread.
  add({
    group: "delivery",
    name: "server CPU per local delivery (all threads)",
    value: cpu.total / n * 1e6,
    unit: "µs",
    note: cpu.threads.slice(0, 4).map(([name, s]) =>
      `${name} ${Math.round(s / n * 1e6)}`
    ).join(", "),
  });
  // The same with the messages module in a process (the placement of every
  // module not shipped with the server), next to the Worker figure above.
  const place = (isolation: "worker" | "process") =>
    admin.call("admin_set_module_isolation", {
      admin_token: adminToken,
      name: "messages",
      version: "1.0.0",
      isolation,
    });
  await place("process");
  const sendAll = (w: number) =>
    sessions[w].call("send", {
      to: [receivers[(w + n++) % receivers.length]],
      subject: "b",
      body,
    });
  await concurrent(50, sendAll, 500); // warm: a fresh copy starts cold
  const inProcess = await concurrent(50, sendAll, SEQ_MS * 2);
  await place("worker");
  await concurrent(50, sendAll, 500);
  add({
    group: "delivery",
    name: "local delivery as above, messages module in a process",
    value: inProcess,
    unit: "msgs/s",
    baseline: rate,
    baselineName: "in a Worker",
  });
  // Rules (modules/rules): the same run with 20 rules per recipient (19
  // that do not match, one that flags), next to the same run with no rules
  // and with the rules module unloaded, measured back to back.
  const ruleSet = [
    ...Array.from({ length: 19 }, (_, i) => ({
      conditions: [
        { field: "from", op: "is", value: `someone${i}@elsewhere.test` },
        { field: "subject", op: "matches", value: `*report ${i}*` },
      ],
      match: "any",
      actions: [{ type: "fileinto", folder: `folder${i}` }],
    })),
    {
      conditions: [{ field: "size", op: "under", value: 1_000_000 }],
      actions: [{ type: "flag" }],
    },
  ];
  const rulesOf = async (list: unknown[]) => {
    for (const r of receivers) {
      const s = await mailSession(await connect(), r, keys.get(r)!);
      const answer = await s.client.request("rules_set", {
        module: "rules",
        user_token: s.token,
        rules: list,
      });
      if (answer.error !== 0) throw new Error(`rules_set: ${answer.message}`);
      s.client.close();
    }
  };
  const rulesModule = (command: string) =>
    admin.call(command, {
      admin_token: adminToken,
      name: "rules",
      version: "1.0.0",
    });
  // The server's CPU (every thread, the modules' Workers included) per
  // delivery since a reading, in µs.
  const cpuPer = (before: Map<string, number>, deliveries: number) =>
    cpuSince(before, threadCpu(server.child.pid)).total * 1e6 / deliveries;
  await rulesModule("admin_unload_module");
  await concurrent(50, sendAll, 500);
  const cpuStart = threadCpu(server.child.pid);
  const noModule = await concurrent(50, sendAll, SEQ_MS * 2);
  const cpuNoModule = cpuPer(cpuStart, noModule * SEQ_MS * 2 / 1000);
  await rulesModule("admin_load_module");
  // Alternating rounds, medians: the machine's load drifts between runs.
  // Beside the rate, the server's CPU time per delivery (its process, the
  // modules' Workers included): what the rules cost, whatever else runs.
  const without: number[] = [];
  const within: number[] = [];
  const cpuWithout: number[] = [];
  const cpuWithin: number[] = [];
  for (let round = 0; round < (FULL ? 6 : 4); round++) {
    // Which goes first alternates, so a drift favours neither.
    for (const rules of round % 2 ? [ruleSet, []] : [[], ruleSet]) {
      await rulesOf(rules);
      await concurrent(50, sendAll, 300);
      const cpuRound = threadCpu(server.child.pid);
      const rate = await concurrent(50, sendAll, SEQ_MS);
      const perDelivery = cpuPer(cpuRound, rate * SEQ_MS / 1000);
      (rules.length ? within : without).push(rate);
      (rules.length ? cpuWithin : cpuWithout).push(perDelivery);
    }
  }
  await rulesOf([]);
  const noRules = percentile(without, 0.5);
  const withRules = percentile(within, 0.5);
  add({
    group: "delivery",
    name: "local delivery as above, rules module unloaded",
    value: noModule,
    unit: "msgs/s",
    baseline: noRules,
    baselineName: "rules module, no rules",
  });
  add({
    group: "delivery",
    name: "local delivery as above, 20 rules per recipient (median of rounds)",
    value: withRules,
    unit: "msgs/s",
    baseline: noRules,
    baselineName: "rules module, no rules",
    goal: ">= 90% of no rules",
    met: withRules >= 0.9 * noRules,
    note: `rounds without/with: ${without.map(Math.round).join(", ")} / ${
      within.map(Math.round).join(", ")
    }`,
  });
  add({
    group: "delivery",
    name: "server CPU per local delivery, rules module unloaded",
    value: cpuNoModule,
    unit: "µs",
    baseline: percentile(cpuWithout, 0.5),
    baselineName: "rules module, no rules",
  });
  add({
    group: "delivery",
    name: "server CPU per local delivery, 20 rules per recipient (median)",
    value: percentile(cpuWithin, 0.5),
    unit: "µs",
    baseline: percentile(cpuWithout, 0.5),
    baselineName: "rules module, no rules",
    goal: "<= 110% of no rules",
    met: percentile(cpuWithin, 0.5) <= 1.1 * percentile(cpuWithout, 0.5),
    note: `rounds without/with: ${cpuWithout.map(Math.round).join(", ")} / ${
      cpuWithin.map(Math.round).join(", ")
    }`,
  });
  // Send-to-push latency at a steady rate.
  const steady = Math.min(500, Math.floor(rate * 0.6));
  const watcher = await mailSession(
    await connect(),
    "r0@bench.test",
    keys.get("r0@bench.test")!,
  );
  const sentAt = new Map<string, number>();
  const latencies: number[] = [];
  watcher.client.onPush((p) => {
    const subject = (p.data as { subject?: string }).subject ?? "";
    const t0 = sentAt.get(subject);
    if (p.event === "message_new" && t0 !== undefined) {
      latencies.push(performance.now() - t0);
    }
  });
  const total = steady * (FULL ? 10 : 3);
  const pending: Promise<unknown>[] = [];
  const start = performance.now();
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / steady;
    const wait = due - performance.now();
    if (wait > 0) await new Promise((r) => setTimeout(r, wait));
    const subject = `lat-${i}`;
    sentAt.set(subject, performance.now());
    pending.push(
      sessions[i % 50].call("send", { to: ["r0@bench.test"], subject, body }),
    );
  }
  await Promise.all(pending);
  await new Promise((r) => setTimeout(r, 500));
  add({
    group: "delivery",
    name: `send-to-push latency p50 at ${steady} msgs/s`,
    value: percentile(latencies, 0.5),
    unit: "ms",
  });
  add({
    group: "delivery",
    name: `send-to-push latency p99 at ${steady} msgs/s`,
    value: percentile(latencies, 0.99),
    unit: "ms",
    goal: "<= 10 ms at 500/s",
    met: steady >= 500 && percentile(latencies, 0.99) <= 10,
    note: steady < 500
      ? `500/s not sustainable here; measured at ${steady}/s`
      : undefined,
  });
  for (const s of [...sessions, watcher]) s.client.close();
  // Disk: the messages module's database compacted (SQLite's VACUUM INTO a
  // copy, the server running), per message delivered so far (each with
  // its sender's and its recipient's copies, every index).
  const delivered = n + total;
  const compacted = `${root}/compacted.kv`;
  const vacuum = await new Deno.Command("sqlite3", {
    args: [
      `${main.cwd}/data/modules/messages.kv`,
      `VACUUM INTO '${compacted}'`,
    ],
  }).output().catch(() => null);
  if (vacuum?.success) {
    const bytes = (await Deno.stat(compacted)).size;
    await Deno.remove(compacted);
    add({
      group: "delivery",
      name: "disk per delivered 1 KiB message, after compaction",
      value: bytes / delivered,
      unit: "bytes",
      goal: "<= 3 KiB",
      met: bytes / delivered <= 3072,
      note: `${delivered} messages, sqlite3 VACUUM INTO`,
    });
  }
});

// 5. Module round trips.
await section("modules", async () => {
  const client = await connect();
  const token = await login(
    client,
    "user",
    "u@bench.test",
    keys.get("u@bench.test")!,
  );
  const timeIt = async (work: () => Promise<unknown>) => {
    // Warm (a replaced module copy starts cold), then measure.
    for (const until = performance.now() + 500; performance.now() < until;) {
      await work();
    }
    const samples: number[] = [];
    const cpuBefore = threadCpu(server.child.pid);
    const end = performance.now() + SEQ_MS;
    while (performance.now() < end) {
      const t0 = performance.now();
      await work();
      samples.push(performance.now() - t0);
    }
    // The server's CPU per call over all its threads (robust under load).
    const cpu = cpuSince(cpuBefore, threadCpu(server.child.pid)).total;
    return {
      p50: percentile(samples, 0.5),
      cpuUs: cpu * 1e6 / samples.length,
    };
  };
  const { p50: core, cpuUs: coreCpu } = await timeIt(() =>
    client.request("user_get_keys", { user_token: token })
  );
  add({
    group: "modules",
    name: "in-core command (user_get_keys) p50",
    value: core * 1000,
    unit: "µs",
    note: `server CPU ${coreCpu.toFixed(0)} µs per call`,
  });
  for (const isolation of ["worker", "process"] as const) {
    await admin.call("admin_set_module_isolation", {
      admin_token: adminToken,
      name: "example",
      version: "1.0.0",
      isolation,
    });
    const { p50: mod, cpuUs: modCpu } = await timeIt(() =>
      client.request("echo", {
        module: "example",
        user_token: token,
        text: "hi",
      })
    );
    add({
      group: "modules",
      name: `module round trip (example echo), ${isolation}, p50`,
      value: mod * 1000,
      unit: "µs",
      baseline: core * 1000,
      baselineName: "in-core",
      goal: isolation === "worker" ? "<= +100 µs over in-core" : undefined,
      met: isolation === "worker" ? (mod - core) * 1000 <= 100 : undefined,
      note: `adds ${((mod - core) * 1000).toFixed(0)} µs; server CPU ${
        modCpu.toFixed(0)
      } µs per call (in-core ${coreCpu.toFixed(0)})`,
    });
    // Starting a copy: the graph check (cached while the files are unchanged)
    // and the Worker or the process, until it answers.
    const starts: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      await admin.call("admin_reload_module", {
        admin_token: adminToken,
        name: "example",
        version: "1.0.0",
      });
      starts.push(performance.now() - t0);
    }
    add({
      group: "modules",
      name: `module start (admin_reload_module), ${isolation}, p50 of 5`,
      value: percentile(starts, 0.5),
      unit: "ms",
    });
  }
  await admin.call("admin_set_module_isolation", {
    admin_token: adminToken,
    name: "example",
    version: "1.0.0",
    isolation: "worker",
  });
  client.close();
});

/** Sessions per holder process (one process times out opening 10,000). */
const PER_HOLDER = 2500;

/** Idle sessions held by helper processes (bench/session_holder.ts). */
async function holdSessions(
  order: Omit<HolderOrder, "count">,
  count: number,
): Promise<
  { pushedAt(ms: number): Promise<number | null>; close(): Promise<void> }
> {
  const holders: { child: Deno.ChildProcess; lines: string[] }[] = [];
  for (let from = 0; from < count; from += PER_HOLDER) {
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--unstable-net",
        "--allow-net",
        "--allow-read",
        "--allow-env",
        `--config=${new URL("../deno.json", import.meta.url).pathname}`,
        new URL("./session_holder.ts", import.meta.url).pathname,
        JSON.stringify({ ...order, count: Math.min(PER_HOLDER, count - from) }),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const lines: string[] = [];
    (async () => {
      let rest = "";
      for await (
        const chunk of child.stdout.pipeThrough(new TextDecoderStream())
      ) {
        rest += chunk;
        const parts = rest.split("\n");
        rest = parts.pop() ?? "";
        lines.push(...parts);
      }
    })();
    holders.push({ child, lines });
  }
  const until = async (ms: number, done: () => boolean) => {
    const end = Date.now() + ms;
    while (!done() && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 20));
    }
    return done();
  };
  const ready = await until(
    600_000,
    () => holders.every((h) => h.lines.some((l) => l.startsWith("ready"))),
  );
  const close = async () => {
    for (const h of holders) {
      await h.child.stdin.close().catch(() => {});
      const timer = setTimeout(() => h.child.kill("SIGKILL"), 10_000);
      await h.child.status;
      clearTimeout(timer);
    }
  };
  if (!ready) {
    await close();
    throw new Error(`the holders did not open ${count} sessions in time`);
  }
  return {
    async pushedAt(ms) {
      const pushed = (h: { lines: string[] }) =>
        h.lines.find((l) => l.startsWith("pushed"));
      if (!await until(ms, () => holders.every(pushed))) return null;
      return Math.max(...holders.map((h) => Number(pushed(h)!.split(" ")[2])));
    },
    close,
  };
}

// 6. Idle sessions: memory and a push to all.
await section("sessions", async () => {
  const counts = FULL ? [1000, 5000, 10_000] : [1000];
  for (const count of counts) {
    for (const transport of ["webtransport", "websocket"] as const) {
      const echo = await startEcho();
      const label = transport === "webtransport" ? "WebTransport" : "WebSocket";
      try {
        const before = rss(echo.child.pid);
        const bare = await holdSessions({
          url: `https://127.0.0.1:${echo.port}/amtp`,
          transport,
          certPem: echoCert.certPem,
        }, count);
        await new Promise((r) => setTimeout(r, 500));
        const barePer = (rss(echo.child.pid) - before) / count;
        // The bare server's push to all: one 100-byte frame to every session.
        const url = `https://127.0.0.1:${echo.port}/amtp`;
        const trigger = transport === "webtransport"
          ? await openWebTransport({ url, certHash: echoCert.sha256 })
          : await openWebSocket({
            url: url.replace("https", "wss"),
            caCerts: [echoCert.certPem],
          });
        const bareStart = Date.now();
        await trigger.send(
          new Uint8Array([12, 0, 0, 0, 0x10, 0x62, 0, 1, 0, 0, 0, 0]),
        );
        const bareLast = await bare.pushedAt(30_000);
        const barePushMs = bareLast === null ? NaN : bareLast - bareStart;
        trigger.close();
        await bare.close();
        // A fresh server, so that earlier figures' garbage does not blur the measure.
        const fresh = await startAmtp(root, `sessions-${count}-${transport}`);
        await new Promise((r) => setTimeout(r, 500));
        const serverBefore = rss(fresh.server.child.pid);
        const token = await login(
          fresh.admin,
          "user",
          "u@bench.test",
          fresh.keys.get("u@bench.test")!,
        );
        const held = await holdSessions({
          url: `https://127.0.0.1:${fresh.server.port}/amtp`,
          transport,
          certPem: await Deno.readTextFile(`${fresh.cwd}/data/tls/cert.pem`),
          token,
        }, count);
        await new Promise((r) => setTimeout(r, 500));
        const amtpPer = (rss(fresh.server.child.pid) - serverBefore) / count;
        add({
          group: "sessions",
          name: `${count} idle ${label} sessions, memory per session`,
          value: amtpPer / 1024,
          unit: "KiB",
          baseline: barePer / 1024,
          baselineName: "bare echo",
          goal: "<= 125% of bare",
          met: amtpPer <= 1.25 * barePer,
        });
        const t0 = Date.now();
        await fresh.admin.call("ping_me", {
          module: "example",
          user_token: token,
        });
        const last = await held.pushedAt(30_000);
        const pushMs = last === null ? NaN : last - t0;
        add({
          group: "sessions",
          name: `push to all ${count} ${label} sessions`,
          value: pushMs,
          unit: "ms",
          baseline: barePushMs,
          baselineName: "bare echo",
          goal: "<= 2,000 ms",
          met: last !== null && pushMs <= 2000,
          note: last === null
            ? "not every session received it in 30 s"
            : undefined,
        });
        await held.close();
        fresh.admin.close();
        await fresh.server.stop();
      } finally {
        await echo.stop();
      }
    }
  }
});

admin.close();
await server.stop();

// 7. Federated delivery between two servers.
await section("federation", async () => {
  const world = await startWorld([["a.bench.test", "alpha.test"], [
    "b.bench.test",
    "beta.test",
  ]], {
    AMTP_RATE_LIMIT: "10000000",
    AMTP_LOG_LEVEL: "warn",
    AMTP_FEDERATION_LIFETIME: "600",
    AMTP_FEDERATION_BATCH: Deno.env.get("AMTP_FEDERATION_BATCH") ?? "1",
  });
  try {
    const senders = await Promise.all(
      Array.from({ length: 20 }, (_, i) => world.mail(`s${i}@alpha.test`)),
    );
    const receiver = await world.mail("r@beta.test");
    const arrived: number[] = [];
    const sentAt = new Map<string, number>();
    receiver.client.onPush((p) => {
      const subject = (p.data as { subject?: string }).subject ?? "";
      const t0 = sentAt.get(subject);
      if (t0 !== undefined) arrived.push(performance.now() - t0);
    });
    const count = FULL ? 5000 : 1000;
    // Both servers' CPU: what a federated delivery costs in all.
    const pids = world.nodes.map((n) => n.server!.child.pid);
    const cpuBefore = pids.map((pid) => threadCpu(pid));
    const start = performance.now();
    await Promise.all(senders.map(async (s, w) => {
      for (let i = w; i < count; i += senders.length) {
        const subject = `f-${i}`;
        sentAt.set(subject, performance.now());
        await s.call("send", {
          to: ["r@beta.test"],
          subject,
          body: "x".repeat(1024),
        });
      }
    }));
    const deadline = Date.now() + 120_000;
    while (arrived.length < count && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const rate = arrived.length / ((performance.now() - start) / 1000);
    const [sending, receiving] = pids.map((pid, i) => {
      const cpu = cpuSince(cpuBefore[i], threadCpu(pid));
      const per = (s: number) => Math.round(s / arrived.length * 1e6);
      return {
        total: per(cpu.total),
        threads: cpu.threads.slice(0, 4).map(([name, s]) => `${name} ${per(s)}`)
          .join(", "),
      };
    });
    add({
      group: "federation",
      name: "federated delivery, 1 KiB, 20 senders (received at the remote)",
      value: rate,
      unit: "msgs/s",
      ...(localRate
        ? {
          baseline: localRate,
          baselineName: "local delivery",
          goal: ">= 50% of local",
          met: rate >= localRate / 2,
        }
        : {}),
      note: `${arrived.length} of ${count} arrived; AMTP_FEDERATION_BATCH ${
        Deno.env.get("AMTP_FEDERATION_BATCH") ?? "1"
      }`,
    });
    // The bound on 2 cores: both servers' CPU per delivery against local's.
    add({
      group: "federation",
      name: "server CPU per federated delivery (sending + receiving server)",
      value: sending.total + receiving.total,
      unit: "µs",
      ...(localCpu
        ? { baseline: localCpu, baselineName: "local delivery" }
        : {}),
      note:
        `sending ${sending.total} (${sending.threads}); receiving ${receiving.total} (${receiving.threads})`,
    });
    // Latency at a steady rate.
    arrived.length = 0;
    sentAt.clear();
    const steady = Math.min(200, Math.floor(rate * 0.6));
    const total = steady * 3;
    const t0 = performance.now();
    const pending = [];
    for (let i = 0; i < total; i++) {
      const wait = t0 + (i * 1000) / steady - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      const subject = `fl-${i}`;
      sentAt.set(subject, performance.now());
      pending.push(
        senders[i % senders.length].call("send", {
          to: ["r@beta.test"],
          subject,
          body: "x",
        }),
      );
    }
    await Promise.all(pending);
    const end = Date.now() + 30_000;
    while (arrived.length < total && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 20));
    }
    add({
      group: "federation",
      name: `send-to-remote-push latency p50 at ${steady} msgs/s`,
      value: percentile(arrived, 0.5),
      unit: "ms",
    });
    add({
      group: "federation",
      name: `send-to-remote-push latency p99 at ${steady} msgs/s`,
      value: percentile(arrived, 0.99),
      unit: "ms",
      goal: "<= 25 ms at 200/s",
      met: steady >= 200 && percentile(arrived, 0.99) <= 25,
    });
  } finally {
    await world.close();
  }
});

// 8. Transfers beside commands: one session downloads a 100 MiB attachment
// (8 chunks in flight) while it pings and receives pushes; each figure next
// to the same session idle, on the transfer lane and on the command stream,
// at the default transfer rate and unpaced.
interface TransferRun {
  idleP99: number;
  uploadMs: number;
  lane: DownloadRun;
  commands: DownloadRun;
}
interface DownloadRun {
  p99: number;
  ms: number;
  growth: number;
  before: number;
  pushes: number;
  pushesSent: number;
}
const MiB = 1024 * 1024;
const TRANSFER_SIZE = 100 * MiB;

/**
 * How the measured session connects: WebTransport, WebSocket as the CLI
 * opens it (the `ws` package over `node:tls`: TCP_NODELAY, as browsers), or
 * Deno's own `WebSocket` (no TCP_NODELAY: a small request waits for the
 * server's ACK behind the last one, up to a chunk's turn).
 */
type TransferClient = "webtransport" | "websocket" | "deno-websocket";

async function transferRun(
  name: string,
  rate?: string,
  transport: TransferClient = "webtransport",
): Promise<TransferRun> {
  const size = TRANSFER_SIZE;
  const CHUNK = 256 * 1024;
  const server = await startAmtp(root, name, {
    AMTP_MESSAGES_MAX_ATTACHMENT: String(size),
    ...(rate === undefined ? {} : { AMTP_TRANSFER_RATE: rate }),
  });
  try {
    const client = transport === "websocket"
      ? await AmtpClient.connect({
        url: `wss://localhost:${server.server.port}/amtp`,
        keepAliveMs: 0,
        requestTimeoutMs: 120_000,
        open: async () =>
          openNodeWebSocket({
            address: "127.0.0.1",
            port: server.server.port,
            name: "127.0.0.1",
            caCerts: [
              await Deno.readTextFile(`${server.cwd}/data/tls/cert.pem`),
            ],
          }),
      })
      : await server.connect(
        transport === "deno-websocket" ? "websocket" : "webtransport",
      );
    const u = await mailSession(
      client,
      "u@bench.test",
      server.keys.get("u@bench.test")!,
    );
    await server.user("v@bench.test");
    const v = await mailSession(
      await server.connect(),
      "v@bench.test",
      server.keys.get("v@bench.test")!,
    );
    // The file: 100 MiB of a repeated random block.
    const block = crypto.getRandomValues(new Uint8Array(65536));
    const chunk = new Uint8Array(CHUNK);
    for (let at = 0; at < CHUNK; at += block.byteLength) chunk.set(block, at);
    const hash = createHash("sha256");
    for (let at = 0; at < size; at += CHUNK) hash.update(chunk);
    const started = await u.call<{ upload_id: string }>("attachment_upload", {
      name: "big.bin",
      size,
      sha256: hash.digest("hex"),
    });
    const up0 = performance.now();
    for (let index = 0; index * CHUNK < size; index++) {
      const r = await client.transferRequest("attachment_upload_chunk", {
        module: "messages",
        user_token: u.token,
        upload_id: started.upload_id,
        index,
        data: chunk,
      });
      if (r.error) throw new Error(`upload: ${r.message}`);
    }
    const uploadMs = performance.now() - up0;
    const { attachment_id } = await u.call<{ attachment_id: string }>(
      "attachment_upload_finish",
      { upload_id: started.upload_id },
    );
    const sent = await u.call<{ id: string }>("send", {
      to: ["u@bench.test"],
      subject: "big",
      body: "x",
      attachments: [attachment_id],
    });
    const pingP99 = async (until: () => boolean, minimum: number) => {
      const samples: number[] = [];
      while (!until() || samples.length < minimum) {
        const t0 = performance.now();
        await client.request("ping");
        samples.push(performance.now() - t0);
      }
      return percentile(samples, 0.99);
    };
    /** Download while pinging and receiving pushes on the same session. */
    const download = async (lane: boolean): Promise<DownloadRun> => {
      const ask = lane
        ? client.transferRequest.bind(client)
        : client.request.bind(client);
      const chunks = size / CHUNK;
      let next = 0;
      let done = false;
      let peak = 0;
      const pid = server.server.child.pid;
      const before = rss(pid);
      const sampler = setInterval(() => peak = Math.max(peak, rss(pid)), 50);
      const pushesBefore = u.pushes.length;
      let pushesSent = 0;
      const pusher = (async () => {
        while (!done) {
          await v.call("send", {
            to: ["u@bench.test"],
            subject: "p",
            body: "p",
          });
          pushesSent++;
          await new Promise((r) => setTimeout(r, 50));
        }
      })();
      const t0 = performance.now();
      const running = Promise.all(
        Array.from({ length: 8 }, async () => {
          while (next < chunks) {
            const index = next++;
            const r = await ask("attachment_get", {
              module: "messages",
              user_token: u.token,
              id: sent.id,
              attachment_id,
              index,
            }, 120_000);
            if (r.error) throw new Error(`download: ${r.message}`);
          }
        }),
      ).finally(() => done = true);
      const p99 = await pingP99(() => done, 1);
      await running;
      const ms = performance.now() - t0;
      await pusher;
      clearInterval(sampler);
      // Pushes on their way when the download ended arrive just after it.
      await new Promise((r) => setTimeout(r, 300));
      return {
        p99,
        ms,
        growth: peak - before,
        before,
        pushes: u.pushes.length - pushesBefore,
        pushesSent,
      };
    };
    const idle = await pingP99(() => true, 1000);
    const lane = await download(true);
    const idleAfter = await pingP99(() => true, 1000);
    // Over WebSocket there is one connection: the lane is the connection.
    const commands = transport === "webtransport"
      ? await download(false)
      : lane;
    return {
      idleP99: Math.max(idle, idleAfter),
      uploadMs,
      lane,
      commands,
    };
  } finally {
    await server.server.stop();
  }
}

await section("transfers", async () => {
  const paced = await transferRun("transfers-paced");
  const unpaced = await transferRun("transfers-unpaced", "0");
  const ws = await transferRun("transfers-ws", undefined, "websocket");
  const denoWs = await transferRun(
    "transfers-deno-ws",
    undefined,
    "deno-websocket",
  );
  const us = (ms: number) => ms * 1000;
  const rate = (ms: number) => TRANSFER_SIZE / MiB / (ms / 1000);
  add({
    group: "transfers",
    name: "100 MiB upload on the lane, sequential chunks",
    value: rate(paced.uploadMs),
    unit: "MiB/s",
  });
  add({
    group: "transfers",
    name: "ping p99 during a 100 MiB download on the lane (default rate)",
    value: us(paced.lane.p99),
    unit: "µs",
    baseline: us(paced.idleP99),
    baselineName: "same session idle",
    goal: "<= 2x idle",
    met: paced.lane.p99 <= 2 * paced.idleP99,
  });
  add({
    group: "transfers",
    name: "ping p99 during it on the command stream (default rate)",
    value: us(paced.commands.p99),
    unit: "µs",
    baseline: us(paced.idleP99),
    baselineName: "same session idle",
  });
  add({
    group: "transfers",
    name:
      "ping p99 during a 100 MiB download over WebSocket (CLI client, default rate)",
    value: us(ws.lane.p99),
    unit: "µs",
    baseline: us(ws.idleP99),
    baselineName: "same session idle",
    goal: "<= 2x idle",
    met: ws.lane.p99 <= 2 * ws.idleP99,
  });
  add({
    group: "transfers",
    name: "the same, client on Deno's own WebSocket (no TCP_NODELAY)",
    value: us(denoWs.lane.p99),
    unit: "µs",
    baseline: us(denoWs.idleP99),
    baselineName: "same session idle",
  });
  add({
    group: "transfers",
    name: "pushes received during the WebSocket download",
    value: ws.lane.pushes,
    unit: "pushes",
    baseline: ws.lane.pushesSent,
    baselineName: "sent meanwhile",
    goal: "all arrive",
    met: ws.lane.pushes >= ws.lane.pushesSent,
  });
  add({
    group: "transfers",
    name: "ping p99 during an unpaced download on the lane",
    value: us(unpaced.lane.p99),
    unit: "µs",
    baseline: us(unpaced.idleP99),
    baselineName: "same session idle",
  });
  add({
    group: "transfers",
    name: "ping p99 during an unpaced download on the command stream",
    value: us(unpaced.commands.p99),
    unit: "µs",
    baseline: us(unpaced.lane.p99),
    baselineName: "unpaced on the lane",
  });
  add({
    group: "transfers",
    name: "100 MiB download on the lane (default rate, 8 in flight)",
    value: rate(paced.lane.ms),
    unit: "MiB/s",
    baseline: rate(unpaced.lane.ms),
    baselineName: "unpaced",
  });
  add({
    group: "transfers",
    name: "pushes received during the lane download",
    value: paced.lane.pushes,
    unit: "pushes",
    baseline: paced.lane.pushesSent,
    baselineName: "sent meanwhile",
    goal: "all arrive",
    met: paced.lane.pushes >= paced.lane.pushesSent,
  });
  const growth = Math.max(paced.lane.growth, unpaced.lane.growth);
  add({
    group: "transfers",
    name: "server RSS growth during a 100 MiB download",
    value: growth / MiB,
    unit: "MiB",
    baseline: paced.lane.before / MiB,
    baselineName: "RSS before",
    goal: "flat: < 32 MiB for a 100 MiB file",
    met: growth < 32 * MiB,
  });
});

await section("smtp", async () => {
  if (!postfixAvailable()) {
    throw new Error("postfix is not installed (or not root)");
  }
  const mail = await startEmailWorld(FLOOD_ENV);
  try {
    await mail.world.addUser("bob@example.test");
    const raw = benchMessage("bob@example.test");
    const count = FULL ? 5000 : 1000;
    // Baseline: Postfix taking the same messages and delivering them into a
    // Maildir on this machine (counted when the files are there).
    let start = performance.now();
    await smtpFlood(mail.postfix.port, 20, count, "carol@other.test", raw);
    while ((await mail.postfix.maildir("carol@other.test")).length < count) {
      if (performance.now() - start > 300_000) throw new Error("postfix slow");
      await new Promise((r) => setTimeout(r, 20));
    }
    const postfixRate = count / ((performance.now() - start) / 1000);
    // The gateway: 250 only once stored in the mailbox. Its CPU (the
    // server's threads and the gateway process's) holds under load.
    const pid = mail.world.nodes[0].server!.child.pid;
    const cpuBefore = serverCpu(pid);
    start = performance.now();
    await smtpFlood(mail.port, 20, count, "bob@example.test", raw);
    const rate = count / ((performance.now() - start) / 1000);
    const cpuAfter = serverCpu(pid);
    const cpuOf = (name: string) =>
      cpuSince(cpuBefore.get(name) ?? new Map(), cpuAfter.get(name)!).total;
    const allCpu = [...cpuAfter.keys()].reduce((t, n) => t + cpuOf(n), 0);
    add({
      group: "smtp",
      name: "received over SMTP into mailboxes, 1 KiB, 20 sessions",
      value: rate,
      unit: "msgs/s",
      baseline: postfixRate,
      baselineName: "Postfix into Maildir",
      goal: ">= Postfix's local delivery",
      met: rate >= postfixRate,
    });
    add({
      group: "smtp",
      name: "CPU per message received over SMTP (server and gateway process)",
      value: allCpu / count * 1e6,
      unit: "µs",
      note: [...cpuAfter.keys()].map((n) =>
        `${n} ${Math.round(cpuOf(n) / count * 1e6)}`
      ).join(", "),
    });
  } finally {
    await mail.close();
  }
});

// 8. The web app: a mailbox of 10,000 messages opened in Chromium.
// Scaling with mailbox size: mailboxes filled directly through the store.
await section("scale", async () => {
  const sizes = FULL ? [10_000, 100_000, 1_000_000] : [10_000, 100_000];
  const amtp = await startAmtp(root, "scale", {
    AMTP_MESSAGES_QUOTA: String(1e13),
  });
  const store = `${amtp.cwd}/data/modules/messages.kv`;
  const first = new Map<string, number>();
  try {
    // Users first: the admin's connection idles out during a long fill.
    const userKeys = [];
    for (const size of sizes) {
      userKeys.push(await amtp.user(`big${size}@bench.test`, "Ed25519"));
    }
    for (const [at, size] of sizes.entries()) {
      const address = `big${size}@bench.test`;
      const key = userKeys[at];
      const rate = await fillMailbox(store, address, size, (done) => {
        if (done % 100_000 === 0) console.error(`    ${done} of ${size}`);
      });
      add({
        group: "scale",
        name: `filling a mailbox of ${size} messages through the store`,
        value: rate,
        unit: "msgs/s",
      });
      const s = await mailSession(await amtp.connect(), address, key);
      const ids: string[] = [];
      const prefix = address.split("@")[0];
      for (let i = 0; i < 64; i++) {
        const n = Math.floor(Math.random() * size);
        ids.push(`${prefix}-${n.toString(36).padStart(6, "0")}`);
      }
      let turn = 0;
      const probes: [string, () => Promise<unknown>][] = [
        [
          "list: the newest page of 50",
          () => s.call("list", { folder: "inbox", limit: 50 }),
        ],
        ["list: 10 pages one after another (500 messages)", async () => {
          let cursor: string | undefined;
          for (let i = 0; i < 10; i++) {
            cursor = (await s.call<{ cursor?: string }>("list", {
              folder: "inbox",
              limit: 50,
              cursor,
            })).cursor;
          }
        }],
        [
          "changes: 100 since a cursor",
          () => s.call("changes", { since: size - 100, limit: 100 }),
        ],
        [
          "get: a message at random",
          () => s.call("get", { id: ids[turn++ % ids.length] }),
        ],
        // Words of rank 20 (in about 2 % of messages), 300 and 5,000.
        [
          `search: a common word (${word(20)})`,
          () => s.call("search", { query: word(20) }),
        ],
        [
          `search: a rare word (${word(5000)})`,
          () => s.call("search", { query: word(5000) }),
        ],
        [
          `search: two words (${word(300)} ${word(20)})`,
          () => s.call("search", { query: `${word(300)} ${word(20)}` }),
        ],
        [
          `search: a prefix (${word(300).slice(0, 2)})`,
          () => s.call("search", { query: word(300).slice(0, 2) }),
        ],
      ];
      for (const [name, probe] of probes) {
        for (let i = 0; i < 3; i++) await probe();
        const times: number[] = [];
        for (let i = 0; i < (FULL ? 60 : 30); i++) {
          const t = performance.now();
          await probe();
          times.push(performance.now() - t);
        }
        const p50 = percentile(times, 0.5);
        const base = first.get(name);
        if (base === undefined) first.set(name, p50);
        const search = name.startsWith("search");
        add({
          group: "scale",
          name: `${name}, ${size} messages, p50`,
          value: p50,
          unit: "ms",
          baseline: base,
          baselineName: base === undefined ? undefined : `${sizes[0]}`,
          goal: size === 1_000_000 && search
            ? "<= 50 ms"
            : base !== undefined
            ? "<= 2x of 10k"
            : undefined,
          met: size === 1_000_000 && search
            ? p50 <= 50
            : base !== undefined
            ? p50 <= 2 * base
            : undefined,
        });
      }
      try {
        s.client.close();
      } catch { /* closed */ }
    }
  } finally {
    await amtp.server.stop();
  }
});

await section("web", async () => {
  await ensureBrowserTools();
  const amtp = await startAmtp(root, "web", {
    AMTP_WEB: "on",
    AMTP_WEB_PORT: "0",
  });
  try {
    const url = amtp.server.stdout().match(/web app: (\S+)/)?.[1];
    if (!url) throw new Error("the server did not print the web app's address");
    // The reader's key as a file, as a person would import it.
    const pair = await generateLoginKeyPair("Ed25519");
    await amtp.admin.call("admin_add_user", {
      admin_token: amtp.adminToken,
      address: "reader@bench.test",
      algorithm: "Ed25519",
      public_key: pair.publicKey,
    });
    const keyFile = `${root}/reader.key`;
    await Deno.writeTextFile(keyFile, toPem("PRIVATE KEY", pair.privateKey));
    const total = 10_000;
    const senders = await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const address = `w${i}@bench.test`;
        const key = await amtp.user(address, "Ed25519");
        return await mailSession(await amtp.connect(), address, key);
      }),
    );
    let next = 0;
    const started = performance.now();
    await Promise.all(senders.map(async (s) => {
      while (next < total) {
        const n = next++;
        await s.call("send", {
          to: ["reader@bench.test"],
          subject: `Message ${n}`,
          body: `Body of message ${n}.`,
        });
      }
    }));
    add({
      group: "web",
      name: `filling the mailbox (${total} sends, 20 senders)`,
      value: total / ((performance.now() - started) / 1000),
      unit: "msgs/s",
    });
    const out = await new Deno.Command("node", {
      args: [
        `${BROWSER_DIR}open_mailbox.mjs`,
        url,
        "reader@bench.test",
        keyFile,
        FULL ? "7" : "3",
      ],
      cwd: BROWSER_DIR,
      env: { CHROMIUM },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const result = JSON.parse(
      new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!,
    ) as {
      failure?: string;
      runs: { reloadMs: number; openMs: number; total: number }[];
    };
    if (result.failure) throw new Error(result.failure);
    const median = (xs: number[]) => percentile(xs, 0.5);
    const reload = median(result.runs.map((r) => r.reloadMs));
    add({
      group: "web",
      name:
        `Chromium: reload to the first rows of a ${total}-message inbox (median of ${result.runs.length})`,
      value: reload,
      unit: "ms",
      goal: "< 1000 ms",
      met: reload < 1000 && result.runs.every((r) => r.total === total),
    });
    add({
      group: "web",
      name: "Chromium: connected to the first rows (the session resumed)",
      value: median(result.runs.map((r) => r.openMs)),
      unit: "ms",
    });
  } finally {
    await amtp.server.stop();
  }
});

await Deno.remove(root, { recursive: true });

// The table.
const rows = figures.map((f) => [
  f.group,
  f.name,
  `${fmt(f.value)} ${f.unit}`,
  f.baseline !== undefined ? `${fmt(f.baseline)} (${f.baselineName})` : "",
  f.baseline ? `${(f.value / f.baseline * 100).toFixed(0)}%` : "",
  f.goal ?? "",
  f.met === undefined ? "" : f.met ? "met" : "NOT MET",
]);
const head = [
  "group",
  "figure",
  "value",
  "baseline (same run)",
  "ratio",
  "goal",
  "",
];
const widths = head.map((h, i) =>
  Math.max(h.length, ...rows.map((r) => r[i].length))
);
const line = (cells: string[]) =>
  "| " + cells.map((c, i) => c.padEnd(widths[i])).join(" | ") + " |";
console.log(line(head));
console.log("|" + widths.map((w) => "-".repeat(w + 2)).join("|") + "|");
for (const r of rows) console.log(line(r));
const machine = {
  cores: navigator.hardwareConcurrency,
  os: Deno.build.os,
  deno: Deno.version.deno,
  date: new Date().toISOString(),
  mode: FULL ? "full" : "quick",
};
await Deno.mkdir(OUT.replace(/[^/]*$/, ""), { recursive: true });
await Deno.writeTextFile(OUT, JSON.stringify({ machine, figures }, null, 2));
console.log(
  `\n${
    FULL ? "full" : "quick"
  } run on ${machine.cores} cores, Deno ${machine.deno}; JSON: ${OUT}`,
);
Deno.exit(0);
