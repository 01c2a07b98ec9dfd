/**
 * Where a login's server CPU goes: `deno run -A --unstable-kv --unstable-net
 * bench/login_profile.ts [algorithm] [seconds]` starts a server process with
 * the V8 inspector on loopback, logs 50 users of `algorithm` (`HPKE-X25519`
 * by default) in again and again from 50 clients, and prints
 *
 * - the server's CPU per login by thread, from `/proc/<pid>/task/*\/stat` as
 *   `deno task bench` reads it (the profiler off);
 * - then, sampled by the inspector's profiler (which slows the server: read
 *   the shares, not the sums), the main thread's time per login by function:
 *   its own time, and the time of the functions of this repository and of
 *   `node:crypto` with what they call.
 *
 * @module
 */

import { cpuSince, threadCpu } from "../testing/process.ts";
import type { AmtpClient } from "../client/mod.ts";
import {
  isLoginAlgorithm,
  type LoginAlgorithm,
} from "../shared/login/algorithms.ts";
import { freePort } from "../testing/dnsmasq.ts";
import { login, type TestKey } from "../testing/helpers.ts";
import { startAmtp } from "../testing/server.ts";

const ALGORITHM = Deno.args[0] ?? "HPKE-X25519";
if (!isLoginAlgorithm(ALGORITHM)) throw new Error(`no algorithm ${ALGORITHM}`);
const algorithm: LoginAlgorithm = ALGORITHM;
const MS = Number(Deno.args[1] ?? 4) * 1000;
const CLIENTS = 50;
const INSPECTOR_PORT = freePort();

const root = await Deno.makeTempDir({ prefix: "amtp-login-profile-" });
const amtp = await startAmtp(root, "amtp", {}, {
  denoFlags: [`--inspect=127.0.0.1:${INSPECTOR_PORT}`],
});
const server = amtp.server;
const users: { address: string; key: TestKey; client: AmtpClient }[] = [];
for (let i = 0; i < CLIENTS; i++) {
  const address = `p${i}@bench.test`;
  const key = await amtp.user(address, algorithm);
  users.push({ address, key, client: await amtp.connect() });
}

/** Log every user in again and again for `ms`; the number of logins. */
async function logins(ms: number): Promise<number> {
  let n = 0;
  const end = Date.now() + ms;
  await Promise.all(users.map(async ({ address, key, client }) => {
    while (Date.now() < end) {
      await login(client, "user", address, key);
      n++;
    }
  }));
  return n;
}

const pid = server.child.pid;
await logins(1500); // warm
const before = threadCpu(pid);
const measured = await logins(MS);
const used = cpuSince(before, threadCpu(pid));
console.log(
  `${measured} ${algorithm} logins: server CPU ${
    (used.total / measured * 1e6).toFixed(0)
  } µs per login (${
    used.threads.map(([name, s]) =>
      `${name} ${(s / measured * 1e6).toFixed(0)}`
    )
      .join(", ")
  })`,
);

// The main thread's profile, through the inspector protocol.
const targets = await (await fetch(
  `http://127.0.0.1:${INSPECTOR_PORT}/json/list`,
)).json() as { webSocketDebuggerUrl: string }[];
const socket = new WebSocket(targets[0].webSocketDebuggerUrl);
await new Promise((resolve) => socket.onopen = resolve);
const waiting = new Map<number, (result: unknown) => void>();
socket.onmessage = (event) => {
  const message = JSON.parse(event.data);
  waiting.get(message.id)?.(message.result);
  waiting.delete(message.id);
};
let lastId = 0;
const inspect = <T>(method: string, params = {}) =>
  new Promise<T>((resolve) => {
    const id = ++lastId;
    waiting.set(id, resolve as (result: unknown) => void);
    socket.send(JSON.stringify({ id, method, params }));
  });

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}
await inspect("Profiler.enable");
await inspect("Profiler.setSamplingInterval", { interval: 200 });
await inspect("Profiler.start");
const profiled = await logins(MS);
const { profile } = await inspect<{
  profile: {
    nodes: ProfileNode[];
    samples: number[];
    startTime: number;
    endTime: number;
  };
}>("Profiler.stop");
socket.close();

/** Microseconds per login that one sample stands for. */
const perSample = (profile.endTime - profile.startTime) /
  profile.samples.length / profiled;
const byId = new Map(profile.nodes.map((node) => [node.id, node]));
const parentOf = new Map<number, number>();
for (const node of profile.nodes) {
  for (const child of node.children ?? []) parentOf.set(child, node.id);
}
const here = new URL("..", import.meta.url).href;
const nameOf = (node: ProfileNode) => {
  const { functionName, url, lineNumber } = node.callFrame;
  const where = url.startsWith(here)
    ? url.slice(here.length)
    : url.replace(/^.*\/(npm\/|ext:)/, "$1");
  return `${functionName || "(anonymous)"} ${where}:${lineNumber + 1}`;
};
const own = new Map<string, number>();
const within = new Map<string, number>();
for (const sample of profile.samples) {
  own.set(
    nameOf(byId.get(sample)!),
    (own.get(nameOf(byId.get(sample)!)) ?? 0) + perSample,
  );
  const seen = new Set<string>();
  for (let id: number | undefined = sample; id; id = parentOf.get(id)) {
    const node = byId.get(id)!;
    const name = nameOf(node);
    const ours = node.callFrame.url.startsWith(here) ||
      node.callFrame.url.includes("internal/crypto");
    if (ours && !seen.has(name)) {
      seen.add(name);
      within.set(name, (within.get(name) ?? 0) + perSample);
    }
  }
}
const print = (title: string, rows: Map<string, number>, count: number) => {
  console.log(title);
  for (
    const [name, s] of [...rows].sort((a, b) => b[1] - a[1]).slice(0, count)
  ) {
    console.log(`  ${s.toFixed(1).padStart(7)} µs  ${name}`);
  }
};
console.log(`\n${profiled} logins profiled (main thread, µs per login):`);
own.delete("(idle) :0");
print("own time:", own, 30);
print("with what they call (this repository, node:crypto):", within, 40);

for (const { client } of users) client.close();
amtp.admin.close();
await server.stop();
await Deno.remove(root, { recursive: true });
