/**
 * Many SMTP sessions at once against one port, for the bench and the
 * profile of inbound email (`bench/smtp_profile.ts`), and where the CPU of
 * a receiving server goes, thread by thread.
 *
 * @module
 */

import { dataOf, SmtpConversation } from "../testing/smtp_client.ts";
import { threadCpu } from "../testing/process.ts";

/** The email world's settings for a flood: no rate limit, many sessions from one address. */
export const FLOOD_ENV = {
  AMTP_LOG_LEVEL: "warn",
  AMTP_SMTP_RATE: "1000000",
  AMTP_SMTP_MAX_PER_IP: "100",
};

/** A 1 KiB message as the bench sends it (each copy gets a Message-ID of its own). */
export function benchMessage(to: string): Uint8Array {
  return new TextEncoder().encode(
    `From: zoe@sender.test\r\nTo: ${to}\r\nSubject: bench\r\n\r\n` +
      "x".repeat(1000) + "\r\n",
  );
}

/**
 * Send `count` messages over `sessions` SMTP connections at once (each
 * connection one transaction after another, message `first + i` its own
 * Message-ID); resolves when every one got its 250.
 */
export async function smtpFlood(
  port: number,
  sessions: number,
  count: number,
  to: string,
  raw: Uint8Array,
  first = 0,
): Promise<void> {
  const data = dataOf(raw);
  await Promise.all(Array.from({ length: sessions }, async (_, w) => {
    const smtp = await SmtpConversation.open(port).catch((error) => {
      throw new Error(`port ${port}: ${error}`);
    });
    try {
      await smtp.reply();
      await smtp.command("EHLO bench.test");
      for (let i = w; i < count; i += sessions) {
        await smtp.command("MAIL FROM:<zoe@sender.test>");
        await smtp.command(`RCPT TO:<${to}>`);
        await smtp.command("DATA");
        await smtp.write(
          new TextEncoder().encode(
            `Message-ID: <b${w}.${first + i}@sender.test>\r\n`,
          ),
        );
        await smtp.write(data);
        const done = await smtp.reply();
        if (done.code !== 250) throw new Error(`${done.code} ${done.text}`);
      }
      await smtp.command("QUIT");
    } finally {
      smtp.close();
    }
  }));
}

/** The process ids of `pid`'s children (a module process is the server's child). */
export function childPids(pid: number): number[] {
  const out = new Deno.Command("sh", {
    args: ["-c", `cat /proc/${pid}/task/*/children 2>/dev/null`],
    stdout: "piped",
  }).outputSync();
  return new TextDecoder().decode(out.stdout).split(/\s+/).filter((s) => s)
    .map(Number);
}

/** Per-thread CPU of a server and of every module process it runs, in one reading. */
export function serverCpu(pid: number): Map<string, Map<string, number>> {
  const out = new Map<string, Map<string, number>>();
  out.set("server", threadCpu(pid));
  for (const child of childPids(pid)) {
    const cmd = new Deno.Command("sh", {
      args: ["-c", `tr '\\0' ' ' < /proc/${child}/cmdline`],
      stdout: "piped",
    }).outputSync();
    const entry = new TextDecoder().decode(cmd.stdout).match(
      /modules\/([^/ ]+)\/[^/ ]+\/[^ ]+\.ts/,
    )?.[1] ?? String(child);
    out.set(`module ${entry}`, threadCpu(child));
  }
  return out;
}
