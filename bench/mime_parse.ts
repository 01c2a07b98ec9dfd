/**
 * The MIME parse alone: `deno run -A bench/mime_parse.ts [rounds]` prints
 * the CPU time (this process, all threads) of `parseEmail` per message for
 * the bench's 1 KiB message, a multipart message (text, HTML, a 20 KB
 * attachment and an inline image), a 10 MB attachment and 400,000 short
 * lines, as docs/PERFORMANCE.md reports it (where a parser was compared).
 *
 * @module
 */

import process from "node:process";
import { composeEmail, parseEmail } from "../modules/messages/1.0.0/mime.ts";
import { benchMessage } from "./smtp_flood.ts";

const ROUNDS = Number(Deno.args[0] ?? 3);

const small = benchMessage("bob@example.test");
const multipart = await composeEmail({
  from: "zoe@sender.test",
  from_name: "Zoé",
  to: ["bob@example.test"],
  cc: [],
  subject: "Grüße",
  body: "<p>Hello <b>there</b></p>" + "<p>Some words.</p>".repeat(40),
  format: "html",
  date: new Date(0),
  message_id: "m1@sender.test",
  attachments: [
    {
      name: "data.bin",
      type: "application/octet-stream",
      content: new Uint8Array(20_000).map((_, i) => i * 7),
    },
    {
      name: "logo.png",
      type: "image/png",
      content: new Uint8Array(2_000).map((_, i) => i * 3),
      content_id: "logo",
      inline: true,
    },
  ],
});

const large = await composeEmail({
  from: "zoe@sender.test",
  to: ["bob@example.test"],
  cc: [],
  subject: "large",
  body: "see the file",
  format: "text",
  date: new Date(0),
  message_id: "m2@sender.test",
  attachments: [{
    name: "big.bin",
    type: "application/octet-stream",
    content: new Uint8Array(10_000_000).map((_, i) => i * 7),
  }],
});
const lines = new TextEncoder().encode(
  "Subject: lines\r\n\r\n" + "ab\r\n".repeat(400_000),
);

/** CPU µs per call of `f`, after a warm-up. */
async function cpuPer(f: () => Promise<unknown>, n: number): Promise<number> {
  for (let i = 0; i < n / 5; i++) await f();
  const before = process.cpuUsage();
  for (let i = 0; i < n; i++) await f();
  const used = process.cpuUsage(before);
  return (used.user + used.system) / n;
}

for (let round = 0; round < ROUNDS; round++) {
  const a = await cpuPer(() => parseEmail(small), 3000);
  const b = await cpuPer(() => parseEmail(multipart), 500);
  const c = await cpuPer(() => parseEmail(large), 5);
  const d = await cpuPer(() => parseEmail(lines), 5);
  console.log(
    `parseEmail (CPU): ${small.length} B message ${a.toFixed(0)} µs, ` +
      `${multipart.length} B multipart ${b.toFixed(0)} µs, ` +
      `${large.length} B attachment ${(c / 1000).toFixed(0)} ms, ` +
      `${lines.length} B of short lines ${(d / 1000).toFixed(0)} ms`,
  );
}
