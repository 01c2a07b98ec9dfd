/**
 * Server CPU per login of two checkouts, measured side by side so that the
 * load of a shared machine falls on both alike: `deno run -A --unstable-kv
 * --unstable-net bench/login_compare.ts DIR_A DIR_B [rounds] [algorithm]`
 * starts a server from each checkout (each with its own `testing/server.ts`),
 * then in every round sends 1.5 s of logins from 50 clients (`algorithm`,
 * `HPKE-X25519` by default) to one server and then to the other, the order
 * alternating, and reads each server's CPU from `/proc/<pid>/task/*\/stat`.
 * Prints every round and the totals by thread.
 *
 * @module
 */

import { cpuSince, threadCpu } from "../testing/process.ts";

const [DIR_A, DIR_B] = Deno.args;
if (!DIR_A || !DIR_B) {
  throw new Error("usage: login_compare.ts DIR_A DIR_B [rounds] [algorithm]");
}
const ROUNDS = Number(Deno.args[2] ?? 10);
const ALGORITHM = Deno.args[3] ?? "HPKE-X25519";
const CLIENTS = 50;
const BURST_MS = 1500;

interface Side {
  label: string;
  pid: number;
  /** Logins during `ms`, from every client at once. */
  logins(ms: number): Promise<number>;
  stop(): Promise<void>;
}

async function start(label: string, dir: string): Promise<Side> {
  const root = new URL(`${dir.replace(/\/$/, "")}/`, `file://${Deno.cwd()}/`);
  const { startAmtp } = await import(
    new URL("testing/server.ts", root).href
  );
  const { login } = await import(new URL("testing/helpers.ts", root).href);
  const temp = await Deno.makeTempDir({ prefix: "amtp-compare-" });
  const amtp = await startAmtp(temp, "amtp");
  const addresses = Array.from(
    { length: CLIENTS },
    (_, i) => `c${i}@bench.test`,
  );
  for (const address of addresses) await amtp.user(address, ALGORITHM);
  const clients = await Promise.all(addresses.map(() => amtp.connect()));
  return {
    label,
    pid: amtp.server.child.pid,
    async logins(ms) {
      let n = 0;
      const end = Date.now() + ms;
      await Promise.all(clients.map(async (client, i) => {
        while (Date.now() < end) {
          await login(
            client,
            "user",
            addresses[i],
            amtp.keys.get(addresses[i]),
          );
          n++;
        }
      }));
      return n;
    },
    async stop() {
      for (const client of clients) client.close();
      amtp.admin.close();
      await amtp.server.stop();
      await Deno.remove(temp, { recursive: true });
    },
  };
}

const sides = [await start("A", DIR_A), await start("B", DIR_B)];
for (const side of sides) await side.logins(BURST_MS); // warm
const totals = sides.map(() => ({ n: 0, threads: new Map<string, number>() }));
const perLogin = (seconds: number, n: number) => Math.round(seconds / n * 1e6);
for (let round = 1; round <= ROUNDS; round++) {
  const line: string[] = [];
  for (const i of round % 2 ? [0, 1] : [1, 0]) {
    const side = sides[i];
    const before = threadCpu(side.pid);
    const n = await side.logins(BURST_MS);
    const used = cpuSince(before, threadCpu(side.pid));
    totals[i].n += n;
    for (const [name, s] of used.threads) {
      totals[i].threads.set(name, (totals[i].threads.get(name) ?? 0) + s);
    }
    line[i] = `${side.label} ${perLogin(used.total, n)} µs (${n})`;
  }
  const load = Deno.readTextFileSync("/proc/loadavg").split(" ")[0];
  console.log(`round ${round}, load ${load}: ${line.join(", ")}`);
}
for (const [i, total] of totals.entries()) {
  const cpu = [...total.threads.values()].reduce((a, b) => a + b, 0);
  const threads = [...total.threads].sort((a, b) => b[1] - a[1]).slice(0, 4)
    .map(([name, s]) => `${name} ${perLogin(s, total.n)}`).join(", ");
  console.log(
    `${sides[i].label} (${Deno.args[i]}): ${
      perLogin(cpu, total.n)
    } µs per ${ALGORITHM} login over ${total.n} (${threads})`,
  );
}
for (const side of sides) await side.stop();
