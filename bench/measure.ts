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
 * The KV writes of one local delivery as the messages module stores it
 * (read from a server's database after one delivery: the content's head,
 * holding the first half of the body, and its second half; the owners list;
 * for the recipient's and the sender's copy its record, its folder index
 * entry, its change, its search terms and its mailbox's state; the storage's
 * usage counter once per commit; a new thread has no thread entry; the search
 * index's word entries come later, from the indexer), `perCommit` deliveries
 * per commit, for `ms`: deliveries per second. The ceiling Deno KV puts on
 * local delivery on this machine, measured without any server.
 */
export async function kvDeliveryRate(
  kv: Deno.Kv,
  perCommit: number,
  ms: number,
): Promise<number> {
  const half = new Uint8Array(524).fill(0x78);
  const preview = "x".repeat(160);
  const d = ["mod", "messages", "d"];
  let n = 0;
  const end = performance.now() + ms;
  while (performance.now() < end) {
    const op = kv.atomic();
    for (let k = 0; k < perCommit; k++, n++) {
      const id = `${n}`.padStart(24, "0");
      const gen = `${n}`.padStart(22, "g");
      const date = new Date();
      // Owners of their own per delivery: their states are written once per commit.
      const [r, s] = [`r${n}@bench.test`, `s${n}@bench.test`];
      op.set([...d, "content", id], {
        size: 1048,
        gen,
        chunks: 1,
        first: half,
      });
      op.set(["mod", "messages", "c", gen, 0], half);
      op.set([...d, "owners", id], [53, [r, s]]);
      for (
        const [owner, copy, folder] of [[r, id, "inbox"], [
          s,
          `${id}-sent`,
          "sent",
        ]]
      ) {
        const summary = { fr: s, s: "b", z: 1225, p: preview };
        op.set([...d, "msg", owner, copy], [249, {
          f: folder,
          ...summary,
          d: date.toISOString(),
          q: n,
        }]);
        op.set([...d, "idx", owner, folder, date.getTime(), copy], [
          218,
          summary,
        ]);
        op.set([...d, "chg", owner, n], [58, [copy, folder]]);
        op.set([...d, "ftsd", owner, n], [155, {
          id: copy,
          f: folder,
          w: [
            "1b",
            "2s",
            "2bench",
            "2test",
            "8xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
          ],
        }]);
        op.set([...d, "state", owner], [102, {
          seq: n,
          used: 4909,
          counts: { [folder]: { total: n, unseen: n } },
          folders: [],
          ix: 1,
        }]);
      }
    }
    op.sum(["mod_usage", "messages", "add"], BigInt(2500 * perCommit));
    await op.commit();
  }
  return n / (ms / 1000);
}
