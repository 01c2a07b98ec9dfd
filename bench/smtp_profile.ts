/**
 * Where a received email's CPU goes: `deno run -A --unstable-kv
 * --unstable-net bench/smtp_profile.ts [messages] [sessions]` (as root: it
 * starts Postfix beside the server, as the email tests do) sends 1 KiB
 * messages over 20 SMTP sessions at once to one mailbox through the gateway
 * and prints the CPU per message of each thread of the server and of its
 * module processes (the gateway), from `/proc/<pid>/task/*\/stat`, as
 * docs/PERFORMANCE.md measures, and the client's.
 *
 * @module
 */

import { startEmailWorld } from "../testing/email_world.ts";
import { cpuSince, threadCpu } from "../testing/process.ts";
import { benchMessage, FLOOD_ENV, serverCpu, smtpFlood } from "./smtp_flood.ts";

const COUNT = Number(Deno.args[0] ?? 1000);
const SESSIONS = Number(Deno.args[1] ?? 20);

const mail = await startEmailWorld(FLOOD_ENV);
try {
  await mail.world.addUser("bob@example.test");
  const raw = benchMessage("bob@example.test");
  // Warm: one unmeasured round.
  await smtpFlood(mail.port, SESSIONS, 200, "bob@example.test", raw, 1e6);
  const pid = mail.world.nodes[0].server!.child.pid;
  const before = serverCpu(pid);
  const clientBefore = threadCpu(Deno.pid);
  const t0 = performance.now();
  await smtpFlood(mail.port, SESSIONS, COUNT, "bob@example.test", raw);
  const seconds = (performance.now() - t0) / 1000;
  const after = serverCpu(pid);
  const client = cpuSince(clientBefore, threadCpu(Deno.pid)).total;
  const load = Deno.loadavg()[0];
  console.log(
    `${COUNT} messages in ${seconds.toFixed(2)} s: ${
      (COUNT / seconds).toFixed(0)
    } msgs/s (load ${load.toFixed(1)})`,
  );
  const per = (s: number) => `${(s / COUNT * 1e6).toFixed(0).padStart(6)} µs`;
  let all = 0;
  for (const [process, threads] of after) {
    const { total, threads: rows } = cpuSince(
      before.get(process) ?? new Map(),
      threads,
    );
    all += total;
    console.log(`${process.padEnd(24)} ${per(total)} per message`);
    for (const [name, s] of rows) {
      if (s / COUNT * 1e6 >= 10) {
        console.log(`  ${name.padEnd(22)} ${per(s)}`);
      }
    }
  }
  console.log(`${"server + modules".padEnd(24)} ${per(all)} per message`);
  console.log(`${"client".padEnd(24)} ${per(client)} per message`);
} finally {
  await mail.close();
}
