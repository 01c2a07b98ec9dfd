/**
 * Where a delivery's CPU goes, by function: `deno run -A --unstable-kv
 * --unstable-net bench/cpu_profile.ts [sends]` starts a server process with
 * the V8 inspector on loopback, sends 1 KiB messages from 50 senders to 10
 * mailboxes, samples every JavaScript thread of the server (its main thread
 * and each module Worker: the inspector's targets) while they run, and prints
 * each thread's functions by self time, most first (`PROFILE_TOP`, 25), with
 * the share of "(garbage collector)" and "(program)" (native work outside
 * JavaScript: KV, QUIC, postMessage). `PROFILE_ENV` (JSON) adds to the
 * server's environment. `PROFILE_LOAD=federation`: two servers (a federation
 * world with its DNS), 20 senders on the first sending to one address on the
 * second; both are sampled. The sampling slows the threads: read the
 * shares, and `/proc` (delivery_profile.ts, the bench) for the sums.
 *
 * @module
 */

import { startWorld } from "../testing/federation_world.ts";
import { startAmtp } from "../testing/server.ts";
import { localLoad } from "./local_load.ts";
import { freePort } from "../testing/dnsmasq.ts";

const SENDS = Number(Deno.args[0] ?? 3000);
const SENDERS = 50;
const TOP = Number(Deno.env.get("PROFILE_TOP") ?? 25);

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
}

/** A thread's profiler commands: the main thread's, or a Worker's through it. */
type Send = (
  method: string,
  params?: Record<string, unknown>,
) => Promise<unknown>;

/**
 * The inspector of the server's main thread, and through it (the
 * `NodeWorker` domain) each Worker's: every JavaScript thread by its title.
 */
async function threads(url: string): Promise<
  { threads: Map<string, Send>; close: () => void }
> {
  const socket = new WebSocket(url);
  await new Promise((resolve, reject) => {
    socket.onopen = resolve;
    socket.onerror = reject;
  });
  let id = 0;
  const waiting = new Map<string, (result: unknown) => void>();
  const workers = new Map<string, string>(); // sessionId -> title
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.method === "NodeWorker.attachedToWorker") {
      const { sessionId, workerInfo } = message.params;
      workers.set(sessionId, `${workerInfo.title} ${workerInfo.url}`);
    } else if (message.method === "NodeWorker.receivedMessageFromWorker") {
      const inner = JSON.parse(message.params.message);
      if (inner.id !== undefined) {
        waiting.get(`${message.params.sessionId}/${inner.id}`)?.(inner.result);
      }
    } else if (message.id !== undefined) {
      waiting.get(`main/${message.id}`)?.(message.result);
    }
  };
  const sendTo = (session: string): Send => (method, params = {}) =>
    new Promise<unknown>((resolve) => {
      const n = ++id;
      waiting.set(`${session}/${n}`, resolve);
      const command = JSON.stringify({ id: n, method, params });
      socket.send(
        session === "main" ? command : JSON.stringify({
          id: ++id,
          method: "NodeWorker.sendMessageToWorker",
          params: { sessionId: session, message: command },
        }),
      );
    });
  await sendTo("main")("NodeWorker.enable", { waitForDebuggerOnStart: false });
  await new Promise((r) => setTimeout(r, 500)); // the attach events
  const all = new Map<string, Send>([["main thread", sendTo("main")]]);
  for (const [session, title] of workers) all.set(title, sendTo(session));
  return { threads: all, close: () => socket.close() };
}

/**
 * Sample every thread of the servers whose inspectors listen on `servers`'
 * ports while `run` sends; print each thread's functions per send.
 */
async function profiled(
  servers: { name: string; port: number }[],
  run: () => Promise<number>,
): Promise<void> {
  const inspectors = await Promise.all(servers.map(async ({ name, port }) => {
    const target = (await (await fetch(`http://127.0.0.1:${port}/json/list`))
      .json() as { webSocketDebuggerUrl: string }[])[0];
    return { name, ...await threads(target.webSocketDebuggerUrl) };
  }));
  for (const { threads } of inspectors) {
    for (const send of threads.values()) {
      await send("Profiler.enable");
      await send("Profiler.setSamplingInterval", { interval: 200 });
      await send("Profiler.start");
    }
  }
  const sent = await run();
  await new Promise((r) => setTimeout(r, 2000)); // the background work of the sends
  for (const { name: server, threads, close } of inspectors) {
    for (const [title, send] of threads) {
      const { profile } = await send("Profiler.stop") as {
        profile: { nodes: ProfileNode[]; startTime: number; endTime: number };
      };
      print(`${server} ${title}`, profile, sent);
    }
    close();
  }
}

/** A thread's functions by self time per send, most first. */
function print(
  title: string,
  profile: { nodes: ProfileNode[]; startTime: number; endTime: number },
  sent: number,
): void {
  const total = profile.nodes.reduce((t, node) => t + (node.hitCount ?? 0), 0);
  const byFunction = new Map<string, number>();
  for (const node of profile.nodes) {
    const f = node.callFrame;
    const where = f.url
      ? ` ${
        f.url.replace(/^.*\/(work\/main|npm\/registry\.npmjs\.org)\//, "")
      }:${f.lineNumber + 1}`
      : "";
    const name = `${f.functionName || "(anonymous)"}${where}`;
    byFunction.set(name, (byFunction.get(name) ?? 0) + (node.hitCount ?? 0));
  }
  const idle = byFunction.get("(idle)") ?? 0;
  const busy = total - idle;
  const perSend = (hits: number) =>
    (hits / total * (profile.endTime - profile.startTime) / sent).toFixed(0);
  console.log(`\n${title}: busy ${perSend(busy)} µs/send`);
  for (
    const [name, hits] of [...byFunction].filter(([k]) => k !== "(idle)")
      .sort((a, b) => b[1] - a[1]).slice(0, TOP)
  ) {
    console.log(
      `  ${perSend(hits).padStart(5)} µs  ${
        (hits / busy * 100).toFixed(1).padStart(5)
      } %  ${name}`,
    );
  }
}

const env = JSON.parse(Deno.env.get("PROFILE_ENV") ?? "{}");
if (Deno.env.get("PROFILE_LOAD") === "federation") {
  const ports = [freePort(), freePort()];
  const world = await startWorld([
    ["a.bench.test", "alpha.test"],
    ["b.bench.test", "beta.test"],
  ], {
    AMTP_RATE_LIMIT: "10000000",
    AMTP_LOG_LEVEL: "warn",
    AMTP_FEDERATION_LIFETIME: "600",
    ...env,
  }, { denoFlags: ports.map((port) => [`--inspect=127.0.0.1:${port}`]) });
  try {
    const senders = await Promise.all(
      Array.from({ length: 20 }, (_, i) => world.mail(`s${i}@alpha.test`)),
    );
    await world.addUser("r@beta.test");
    let n = 0;
    const sendAll = (count: number) =>
      Promise.all(senders.map(async (s) => {
        while (n < count) {
          n++;
          await s.call("send", {
            to: ["r@beta.test"],
            subject: "f",
            body: "x".repeat(1024),
          });
        }
      }));
    await sendAll(300); // warm
    await new Promise((r) => setTimeout(r, 2000));
    await profiled([
      { name: "sending", port: ports[0] },
      { name: "receiving", port: ports[1] },
    ], async () => {
      const start = n;
      await sendAll(start + SENDS);
      return n - start;
    });
  } finally {
    await world.close();
  }
} else {
  const inspectorPort = freePort();
  const root = await Deno.makeTempDir({ prefix: "amtp-cpu-profile-" });
  const amtp = await startAmtp(root, "amtp", env, {
    denoFlags: [`--inspect=127.0.0.1:${inspectorPort}`],
  });
  const load = await localLoad(amtp, SENDERS);
  await profiled([{ name: "server", port: inspectorPort }], async () => {
    const start = load.sent;
    await Promise.all(
      Array.from({ length: SENDERS }, async (_, w) => {
        while (load.sent < start + SENDS) await load.send(w);
      }),
    );
    return load.sent - start;
  });
  for (const s of load.sessions) s.client.close();
  amtp.admin.close();
  await amtp.server.stop();
  await Deno.remove(root, { recursive: true });
}
