/**
 * Measuring helpers for the benchmark: round trips, pipelines, percentiles,
 * process memory.
 *
 * @module
 */

import { BSON } from "bson";
import type { ClientTransport } from "../client/transport.ts";

/** A 100-byte request frame. */
export function frame100(id: number): Uint8Array {
  const base = new Uint8Array(
    BSON.serialize({ command: "ping", requestID: id, pad: "" }),
  );
  return new Uint8Array(
    BSON.serialize({
      command: "ping",
      requestID: id,
      pad: "x".repeat(100 - base.length),
    }),
  );
}

/** Sequential round trips per second over a raw transport for `ms`. */
export async function rawSequential(
  t: ClientTransport,
  ms: number,
): Promise<number> {
  const frames = t.frames()[Symbol.asyncIterator]();
  const end = performance.now() + ms;
  let n = 0;
  while (performance.now() < end) {
    await t.send(frame100(n));
    await frames.next();
    n++;
  }
  return n / (ms / 1000);
}

/** Messages per second when `count` are sent back to back and all echoed. */
export async function rawPipelined(
  t: ClientTransport,
  count: number,
): Promise<number> {
  const frames = t.frames()[Symbol.asyncIterator]();
  const start = performance.now();
  const reading = (async () => {
    for (let i = 0; i < count; i++) await frames.next();
  })();
  for (let i = 0; i < count; i++) t.send(frame100(i));
  await reading;
  return count / ((performance.now() - start) / 1000);
}

/** Run `work` in sequence for `ms`; calls per second. */
export async function sequential(
  work: () => Promise<unknown>,
  ms: number,
): Promise<number> {
  const end = performance.now() + ms;
  let n = 0;
  while (performance.now() < end) {
    await work();
    n++;
  }
  return n / (ms / 1000);
}

/** Start `count` calls at once; calls per second until all answered. */
export async function pipelined(
  work: (i: number) => Promise<unknown>,
  count: number,
): Promise<number> {
  const start = performance.now();
  await Promise.all(Array.from({ length: count }, (_, i) => work(i)));
  return count / ((performance.now() - start) / 1000);
}

/** `workers` loops of `work` for `ms`; total calls per second. */
export async function concurrent(
  workers: number,
  work: (worker: number) => Promise<unknown>,
  ms: number,
): Promise<number> {
  const end = performance.now() + ms;
  let n = 0;
  await Promise.all(Array.from({ length: workers }, async (_, w) => {
    while (performance.now() < end) {
      await work(w);
      n++;
    }
  }));
  return n / (ms / 1000);
}

/** A percentile of samples (0 to 1). */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))];
}

/**
 * The KV writes of one local delivery as the messages module stores it (the
 * content, the owners list, and for the recipient's and the sender's copy:
 * record, index entry, change; a new thread has no thread entry), `perCommit` deliveries per
 * commit, for `ms`: deliveries per second. The ceiling Deno KV puts on local
 * delivery on this machine, measured without any server.
 */
export async function kvDeliveryRate(
  kv: Deno.Kv,
  perCommit: number,
  ms: number,
): Promise<number> {
  const body = "x".repeat(1024);
  const preview = "x".repeat(160);
  let n = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const op = kv.atomic();
    for (let k = 0; k < perCommit; k++, n++) {
      const id = `${n}`.padStart(24, "0");
      const date = new Date();
      op.set(["content", id], { size: 1100, value: { body } });
      op.set(["owners", id], { size: 60, value: ["r@b.test", "s@b.test"] });
      for (const owner of ["r@b.test", "s@b.test"]) {
        const summary = {
          id,
          message_id: id,
          folder: "inbox",
          from: "s@b.test",
          to: ["r@b.test"],
          subject: "b",
          date,
          seen: false,
          flagged: false,
          size: 1300,
          preview,
          thread: id,
          encrypted: false,
          attachments: 0,
        };
        op.set(["msg", owner, id], {
          size: 700,
          value: { ...summary, owner, cc: [], bcc: [], format: "text" },
        });
        op.set(["idx", owner, "inbox", date.getTime(), id], {
          size: 400,
          value: summary,
        });
        op.set(["chg", owner, n], {
          size: 60,
          value: { seq: n, type: "new", id, folder: "inbox" },
        });
      }
    }
    await op.commit();
  }
  return n / (ms / 1000);
}
