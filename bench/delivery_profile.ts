/**
 * Where a local delivery's time goes: `deno run -A --unstable-kv
 * --unstable-net bench/delivery_profile.ts [sends] [senders]` starts a server
 * process, sends 1 KiB messages from 50 senders to 10 mailboxes, and prints
 * the server's CPU per delivery by thread (from `/proc/<pid>/task/*\/stat`,
 * as docs/PERFORMANCE.md measures), the client's, and the bytes the data
 * directory grew by per delivered message before and after a compaction
 * (`VACUUM` of each SQLite file, with the server stopped). Then it sends at
 * a steady rate (`PROFILE_RATE`, 200/s by default, for 3 s) to one mailbox
 * watched by a session and prints the send-to-push latency's p50 and p99.
 * `PROFILE_ENV` (JSON) adds to the server's environment, e.g.
 * `{"AMTP_MODULES_OFF":"smtp,rules"}`.
 *
 * @module
 */

import { startAmtp } from "../testing/server.ts";
import { mailSession } from "../testing/mail.ts";
import { localLoad } from "./local_load.ts";
import { percentile } from "./measure.ts";
import { cpuSince, threadCpu } from "../testing/process.ts";

const SENDS = Number(Deno.args[0] ?? 3000);
const SENDERS = Number(Deno.args[1] ?? 50);

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) total += await dirBytes(path);
    else if (entry.isFile) total += (await Deno.stat(path)).size;
  }
  return total;
}

/** Every SQLite file of a directory tree (KV databases), by path. */
async function kvFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory) out.push(...await kvFiles(path));
    else if (entry.isFile && /\.(kv|sqlite|db)$|^kv$/.test(entry.name)) {
      out.push(path);
    }
  }
  return out;
}

const root = await Deno.makeTempDir({ prefix: "amtp-profile-" });
const amtp = await startAmtp(
  root,
  "amtp",
  JSON.parse(Deno.env.get("PROFILE_ENV") ?? "{}"),
);
const load = await localLoad(amtp, SENDERS);
const { sessions, receivers, body } = load;
const pid = amtp.server.child.pid;
const data = `${amtp.cwd}/data`;
const bytesBefore = await dirBytes(data);
const before = threadCpu(pid);
const clientBefore = threadCpu(Deno.pid);
const sentBefore = load.sent;
const t0 = performance.now();
await Promise.all(
  Array.from({ length: SENDERS }, async (_, w) => {
    while (load.sent < sentBefore + SENDS) await load.send(w);
  }),
);
const seconds = (performance.now() - t0) / 1000;
const sent = load.sent - sentBefore;
const atEnd = threadCpu(pid);
// Work left behind by the sends (the search indexer's) is theirs too: the
// server's CPU is read again once it is idle (under 5 % of a core for
// 250 ms, at most 30 s).
let after = atEnd;
for (const until = performance.now() + 30_000; performance.now() < until;) {
  await new Promise((r) => setTimeout(r, 250));
  const now = threadCpu(pid);
  const busy = cpuSince(after, now).total;
  after = now;
  if (busy < 0.0125) break;
}
const settled = (performance.now() - t0) / 1000 - seconds;
const clientCpu = cpuSince(clientBefore, threadCpu(Deno.pid)).total;
const bytesAfter = await dirBytes(data);
console.log(
  `${sent} sends in ${seconds.toFixed(2)} s: ${
    (sent / seconds).toFixed(0)
  } msgs/s`,
);
// By thread name (PROFILE_TIDS: by thread, to tell the KV threads apart).
const rows: [string, number][] = Deno.env.get("PROFILE_TIDS")
  ? [...after].map(([id, s]): [string, number] => [
    id,
    s - (before.get(id) ?? 0),
  ]).filter(([, d]) => d > 0).sort((a, b) => b[1] - a[1])
  : cpuSince(before, after).threads;
const perSend = (s: number) => `${(s / sent * 1e6).toFixed(0)} µs/send`;
const pct = (s: number) => `${(s / seconds * 100).toFixed(0)} % of a core`;
for (const [name, d] of rows) {
  console.log(`  server ${name.padEnd(16)} ${perSend(d)}  ${pct(d)}`);
}
const serverCpu = rows.reduce((a, [, d]) => a + d, 0);
console.log(
  `  server total           ${perSend(serverCpu)}  ${pct(serverCpu)}`,
);
console.log(
  `  (of it after the last send: ${
    perSend(cpuSince(atEnd, after).total)
  }, idle ${settled.toFixed(1)} s after it)`,
);
console.log(
  `  client total           ${perSend(clientCpu)}  ${pct(clientCpu)}`,
);
// Send-to-push latency at a steady rate, all to one watched mailbox.
const steady = Number(Deno.env.get("PROFILE_RATE") ?? 200);
const watcher = await mailSession(
  await amtp.connect(),
  receivers[0],
  amtp.keys.get(receivers[0])!,
);
const sentAt = new Map<string, number>();
const latencies: number[] = [];
watcher.client.onPush((p) => {
  const t0 = sentAt.get((p.data as { subject?: string }).subject ?? "");
  if (p.event === "message_new" && t0 !== undefined) {
    latencies.push(performance.now() - t0);
  }
});
const pending: Promise<unknown>[] = [];
const start = performance.now();
for (let i = 0; i < steady * 3; i++) {
  const wait = start + (i * 1000) / steady - performance.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
  const subject = `lat-${i}`;
  sentAt.set(subject, performance.now());
  pending.push(
    sessions[i % SENDERS].call("send", { to: [receivers[0]], subject, body }),
  );
}
await Promise.all(pending);
await new Promise((r) => setTimeout(r, 500));
load.sent += steady * 3;
console.log(
  `send-to-push at ${steady}/s: p50 ${
    percentile(latencies, 0.5).toFixed(1)
  } ms, p99 ${
    percentile(latencies, 0.99).toFixed(1)
  } ms (${latencies.length} pushes)`,
);
watcher.client.close();
for (const s of sessions) s.client.close();
amtp.admin.close();
await amtp.server.stop();
const grown = bytesAfter - bytesBefore;
// Compaction: VACUUM each database file with the server stopped.
const files = await kvFiles(data);
for (const file of files) {
  const vacuum = new Deno.Command("sqlite3", { args: [file, "VACUUM;"] });
  await vacuum.output().catch(() => null);
}
const compacted = await dirBytes(data);
if (Deno.env.get("PROFILE_KEYS")) {
  // Bytes by record kind in the messages module's database.
  const kv = await Deno.openKv(`${data}/modules/messages.kv`);
  const kinds = new Map<string, { n: number; k: number; v: number }>();
  for await (const e of kv.list({ prefix: [] })) {
    const kind = e.key.slice(0, 4).map(String).join("/").slice(0, 40);
    const t = kinds.get(kind) ?? { n: 0, k: 0, v: 0 };
    t.n++;
    t.k += JSON.stringify(e.key).length;
    t.v += JSON.stringify(e.value, (_, x) =>
      typeof x === "bigint" ? String(x) : x).length;
    kinds.set(kind, t);
  }
  kv.close();
  for (const [kind, t] of kinds) {
    console.log(
      `  ${kind.padEnd(40)} ${t.n} records, key ${
        (t.k / t.n).toFixed(0)
      } B, value ${(t.v / t.n).toFixed(0)} B (JSON)`,
    );
  }
  const sizes = new Deno.Command("sqlite3", {
    args: [
      `${data}/modules/messages.kv`,
      "select count(*), sum(length(k)), sum(length(v)) from kv; pragma page_count; pragma page_size;",
    ],
  });
  console.log(new TextDecoder().decode((await sizes.output()).stdout));
}
console.log(
  `disk: ${(grown / sent).toFixed(0)} bytes per delivered message written ` +
    `(sender's and recipient's copies, WAL included); data dir ${
      (bytesAfter / 1024 / 1024).toFixed(1)
    } MiB, after VACUUM ${(compacted / 1024 / 1024).toFixed(1)} MiB = ${
      (compacted / load.sent).toFixed(0)
    } bytes per message sent in all (${load.sent}); files ${files.length}`,
);
await Deno.remove(root, { recursive: true });
if (Deno.env.get("PROFILE_LOG")) {
  console.log(
    (amtp.server.stderr() + amtp.server.stdout()).split("\n").filter((l) =>
      /PROF/.test(l)
    ).join("\n"),
  );
}
