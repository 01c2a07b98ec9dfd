import assert from "node:assert/strict";
import { KvGroupCommit } from "../../kv/group_commit.ts";
import { OutboundStore } from "../../kv/outbound.ts";
import { Logger } from "../log/mod.ts";
import { ErrorCode, ProtocolError } from "../protocol/mod.ts";
import type { Failure, RecipientResult } from "./delivery.ts";
import { enqueueOutbound } from "./outbox.ts";
import {
  OutboundQueue,
  type PeerSessions,
  type QueueOptions,
} from "./queue.ts";

type Answer = (to: string[]) => RecipientResult[] | Error;

/** A queue on an in-memory KV whose peers answer as `answers` says, per domain. */
async function queued(answers: Record<string, Answer>, batch = 8) {
  const kv = await Deno.openKv(":memory:");
  const store = new OutboundStore(kv, new KvGroupCommit(kv));
  let now = 1_000_000;
  const calls: string[] = [];
  /** Each request: its command and the recipients of each delivery. */
  const requests: { command: string; to: string[][] }[] = [];
  /** Domains whose servers do not know `s2s_deliver_batch`. */
  const noBatch = new Set<string>();
  /** Domains whose servers answer a batch with garbage. */
  const garbage = new Set<string>();
  /** Domains whose servers leave a batch unanswered (the request times out). */
  const silent = new Set<string>();
  const bounces: { id: string; failures: Failure[] }[] = [];
  const peers: PeerSessions = {
    session: (_from, domain) =>
      Promise.resolve({
        call: <T>(command: string, params: Record<string, unknown>) => {
          calls.push(domain);
          if (command === "s2s_deliver_batch") {
            const deliveries = params.deliveries as { to: string[] }[];
            requests.push({ command, to: deliveries.map((d) => d.to) });
            if (garbage.has(domain)) {
              // A hostile or broken peer: results that are not per delivery.
              return Promise.resolve(
                { results: [{ recipients: "all" }, 42] } as T,
              );
            }
            if (silent.has(domain)) {
              return Promise.reject(
                new Error("s2s_deliver_batch timed out after 30000 ms"),
              );
            }
            if (noBatch.has(domain)) {
              return Promise.reject(
                new ProtocolError(ErrorCode.UNKNOWN_COMMAND, "unknown"),
              );
            }
            return Promise.resolve({
              results: deliveries.map((d) => {
                const answer = answers[domain](d.to);
                return answer instanceof ProtocolError
                  ? { error: answer.code, message: answer.message }
                  : answer instanceof Error
                  ? { error: ErrorCode.INTERNAL, message: answer.message }
                  : { recipients: answer };
              }),
            } as T);
          }
          requests.push({ command, to: [params.to as string[]] });
          const answer = answers[domain](params.to as string[]);
          return answer instanceof Error
            ? Promise.reject(answer)
            : Promise.resolve({ recipients: answer } as T);
        },
      }),
    forget: () => {},
  };
  const queue = new OutboundQueue({
    store,
    pool: peers,
    log: new Logger({ sink: () => {} }),
    lifetimeMs: 3_600_000,
    retryBaseMs: 60_000,
    retryMaxMs: 600_000,
    bounce: (item, failures) => {
      bounces.push({ id: item.id, failures });
      return Promise.resolve();
    },
    now: () => now,
    random: () => 1, // delays at their full length
    batch,
  });
  return {
    kv,
    store,
    queue,
    calls,
    requests,
    noBatch,
    garbage,
    silent,
    bounces,
    clock: {
      get now() {
        return now;
      },
      set now(value: number) {
        now = value;
      },
    },
    send: (to: string[], id = crypto.randomUUID()) =>
      enqueueOutbound(store, {
        module: "messages",
        from: "alice@here.test",
        to,
        id,
        payload: {},
      }, now),
  };
}

const delivered: Answer = (to) =>
  to.map((address) => ({ address, status: "delivered" }));
const unreachable: Answer = () => new Error("connection refused");

Deno.test("queue: a queued item is delivered from the due index and leaves it", async () => {
  const q = await queued({ "there.test": delivered });
  try {
    await q.send(["bob@there.test", "carol@there.test"]);
    assert.equal(await q.queue.runOnce(), Infinity);
    assert.deepEqual(q.calls, ["there.test"]);
    assert.deepEqual(await q.store.list(10), []);
    assert.equal(await q.store.nextDue(), undefined);
  } finally {
    q.kv.close();
  }
});

Deno.test("queue: a temporary failure waits its retry (not read before it is due), then is delivered", async () => {
  let answer = unreachable;
  const q = await queued({ "there.test": (to) => answer(to) });
  try {
    await q.send(["bob@there.test"]);
    const next = await q.queue.runOnce();
    assert.equal(
      next,
      q.clock.now + 60_000,
      "the first retry after retryBaseMs",
    );
    const [item] = await q.store.list(10);
    assert.equal(item.attempts, 1);
    assert.match(item.last_error, /connection refused/);
    // Not due yet: nothing is tried.
    q.clock.now += 59_000;
    assert.equal(await q.queue.runOnce(), next);
    assert.equal(q.calls.length, 1);
    q.clock.now = next;
    answer = delivered;
    assert.equal(await q.queue.runOnce(), Infinity);
    assert.equal(q.calls.length, 2);
  } finally {
    q.kv.close();
  }
});

Deno.test("queue: a dead domain's other items wait for its retry; other domains go on; a refusal bounces at once", async () => {
  const q = await queued({
    "dead.test": unreachable,
    "alive.test": delivered,
    "strict.test": (to) =>
      to.map((address) => ({
        address,
        status: "failed",
        error: ErrorCode.NOT_FOUND,
        message: "no such user",
      })),
  });
  try {
    await q.send(["a@dead.test"]);
    const retry = await q.queue.runOnce();
    await q.send(["b@dead.test", "c@alive.test", "d@strict.test"]);
    await q.queue.runOnce();
    // dead.test was not tried again; its second item now waits for the retry.
    assert.equal(q.calls.filter((d) => d === "dead.test").length, 1);
    const waiting = await q.store.list(10);
    // (Two items due at the same time come in the order of their ids.)
    assert.deepEqual(
      waiting.map((i) => [i.domain, i.next_attempt, i.attempts])
        .sort((a, b) => Number(b[2]) - Number(a[2])),
      [["dead.test", retry, 1], ["dead.test", retry, 0]],
    );
    assert.deepEqual(q.bounces.map((b) => b.failures), [[{
      address: "d@strict.test",
      error: ErrorCode.NOT_FOUND,
      message: "no such user",
    }]]);
  } finally {
    q.kv.close();
  }
});

Deno.test("queue: past its lifetime an item bounces as unreachable; admin retry and removal", async () => {
  const q = await queued({ "there.test": unreachable });
  try {
    const [id] = await q.send(["bob@there.test"]);
    await q.queue.runOnce();
    assert.equal(await q.queue.retry(id), true);
    assert.equal((await q.store.get(id))!.value.next_attempt, q.clock.now);
    q.clock.now += 3_600_001;
    await q.queue.runOnce();
    assert.equal(q.bounces.length, 1);
    assert.equal(q.bounces[0].failures[0].error, ErrorCode.REMOTE_UNREACHABLE);
    assert.match(q.bounces[0].failures[0].message, /connection refused/);
    assert.equal(await q.store.get(id), undefined);
    const [other] = await q.send(["carol@there.test"]);
    assert.equal(await q.queue.remove(other), true);
    assert.equal(await q.queue.remove(other), false);
    assert.equal(await q.store.nextDue(), undefined);
  } finally {
    q.kv.close();
  }
});

Deno.test("queue: a permanent session error bounces every recipient; a transient one waits", async () => {
  let error = new ProtocolError(ErrorCode.NO_AMTP_RECORD, "no record");
  const q = await queued({ "there.test": () => error });
  try {
    await q.send(["a@there.test", "b@there.test"]);
    await q.queue.runOnce();
    assert.deepEqual(q.bounces[0].failures.map((f) => f.address), [
      "a@there.test",
      "b@there.test",
    ]);
    error = new ProtocolError(ErrorCode.NO_AMTP_RECORD, "servfail", {
      transient: true,
    });
    await q.send(["c@there.test"]);
    await q.queue.runOnce();
    assert.equal(q.bounces.length, 1);
    assert.equal((await q.store.list(10)).length, 1);
  } finally {
    q.kv.close();
  }
});

Deno.test("queue: a backlog of a domain goes in s2s_deliver_batch requests; an item the peer fails waits for its retry, the others leave once", async () => {
  /** Recipients delivered, once per delivery. */
  const got: string[] = [];
  let failing = true;
  const q = await queued({
    "there.test": (to) => {
      if (failing && to.includes("bad@there.test")) {
        return new ProtocolError(ErrorCode.MODULE_UNAVAILABLE, "busy");
      }
      got.push(...to);
      return to.map((address) => ({ address, status: "delivered" }));
    },
  });
  try {
    // More than may be in flight at once (16): a backlog, sent in batches.
    const good = Array.from({ length: 19 }, (_, i) => `u${i}@there.test`);
    for (const to of [...good, "bad@there.test"]) await q.send([to]);
    const retry = await q.queue.runOnce();
    assert.deepEqual(q.requests.map((r) => [r.command, r.to.length]), [
      ["s2s_deliver_batch", 7],
      ["s2s_deliver_batch", 7],
      ["s2s_deliver_batch", 6],
    ]);
    assert.deepEqual(
      q.requests.flatMap((r) => r.to).flat().sort(),
      [...good, "bad@there.test"].sort(),
    );
    // The failed item is kept (not lost), the delivered ones are gone.
    const left = await q.store.list(10);
    assert.deepEqual(left.map((i) => [i.to, i.attempts]), [
      [["bad@there.test"], 1],
    ]);
    assert.match(left[0].last_error, /busy/);
    assert.deepEqual(q.bounces, []);
    // Its retry delivers it, and nothing else again (not doubled).
    failing = false;
    q.clock.now = retry;
    assert.equal(await q.queue.runOnce(), Infinity);
    assert.deepEqual(got.sort(), [...good, "bad@there.test"].sort());
    assert.deepEqual(q.requests.at(-1), {
      command: "s2s_deliver",
      to: [["bad@there.test"]],
    });
    assert.deepEqual(await q.store.list(10), []);
  } finally {
    q.kv.close();
  }
});

Deno.test("queue: a batch left unanswered (timed out) loses nothing, and its items' retries go one by one", async () => {
  const q = await queued({ "slow.test": delivered });
  q.silent.add("slow.test");
  try {
    for (let i = 0; i < 20; i++) await q.send([`u${i}@slow.test`]);
    const retry = await q.queue.runOnce();
    assert.ok(q.requests.every((r) => r.command === "s2s_deliver_batch"));
    const waiting = await q.store.list(30);
    assert.equal(waiting.length, 20);
    assert.ok(waiting.every((i) => i.attempts === 1));
    // The retries: single deliveries, every item once.
    q.silent.delete("slow.test");
    const before = q.requests.length;
    q.clock.now = retry;
    assert.equal(await q.queue.runOnce(), Infinity);
    const retries = q.requests.slice(before);
    assert.ok(retries.every((r) => r.command === "s2s_deliver"));
    assert.deepEqual(
      retries.flatMap((r) => r.to.flat()).sort(),
      Array.from({ length: 20 }, (_, i) => `u${i}@slow.test`).sort(),
    );
    assert.deepEqual(await q.store.list(30), []);
  } finally {
    q.kv.close();
  }
});

Deno.test("queue: a server that does not know s2s_deliver_batch gets the items one by one", async () => {
  const q = await queued({ "old.test": delivered });
  q.noBatch.add("old.test");
  try {
    const backlog = async (prefix: string) => {
      for (let i = 0; i < 17; i++) await q.send([`${prefix}${i}@old.test`]);
    };
    await backlog("a");
    assert.equal(await q.queue.runOnce(), Infinity);
    const commands = q.requests.map((r) => r.command);
    assert.equal(commands.filter((c) => c === "s2s_deliver").length, 17);
    assert.ok(commands.includes("s2s_deliver_batch"));
    assert.deepEqual(await q.store.list(20), []);
    // From then on it is not asked again.
    const asked = q.requests.length;
    await backlog("b");
    await q.queue.runOnce();
    assert.deepEqual(
      new Set(q.requests.slice(asked).map((r) => r.command)),
      new Set(["s2s_deliver"]),
    );
  } finally {
    q.kv.close();
  }
});

Deno.test("queue: a batch answered with garbage loses nothing: every item waits for its retry", async () => {
  const q = await queued({ "odd.test": delivered });
  q.garbage.add("odd.test");
  try {
    for (let i = 0; i < 17; i++) await q.send([`u${i}@odd.test`]);
    await q.queue.runOnce();
    const left = await q.store.list(20);
    assert.equal(left.length, 17);
    assert.ok(left.every((i) => i.attempts === 1));
    assert.deepEqual(q.bounces, []);
    for (const item of left) assert.ok(item.last_error.length <= 500);
  } finally {
    q.kv.close();
  }
});

Deno.test("queue: without batching (the server's default) a backlog goes one item per request", async () => {
  const q = await queued({ "there.test": delivered }, 1);
  try {
    for (let i = 0; i < 20; i++) await q.send([`u${i}@there.test`]);
    assert.equal(await q.queue.runOnce(), Infinity);
    assert.equal(q.requests.length, 20);
    assert.ok(q.requests.every((r) => r.command === "s2s_deliver"));
    assert.deepEqual(await q.store.list(30), []);
  } finally {
    q.kv.close();
  }
});

/**
 * Instances sharing one database's queue (in memory), each named by its
 * holder, with a 10 s lease unless told, the test's clock, and a peer that
 * records each attempt (`attempts`, by delivery id) and answers "delivered"
 * once `hold` (asked per holder and attempt) has resolved.
 */
async function sharedQueue() {
  const kv = await Deno.openKv(":memory:");
  const store = new OutboundStore(kv, new KvGroupCommit(kv));
  const clock = { now: 1_000_000 };
  const attempts = new Map<string, string[]>();
  const instance = (
    holder: string,
    hold: (holder: string) => Promise<void> | void = () => {},
    options: Partial<QueueOptions> = {},
  ) =>
    new OutboundQueue({
      store,
      pool: {
        session: () =>
          Promise.resolve({
            call: async <T>(_c: string, params: Record<string, unknown>) => {
              const id = params.id as string;
              attempts.set(id, [...attempts.get(id) ?? [], holder]);
              await hold(holder);
              return {
                recipients: (params.to as string[]).map((address) => ({
                  address,
                  status: "delivered",
                })),
              } as T;
            },
          }),
        forget: () => {},
      },
      log: new Logger({ sink: () => {} }),
      lifetimeMs: 3_600_000,
      retryBaseMs: 60_000,
      retryMaxMs: 600_000,
      bounce: () => Promise.resolve(),
      now: () => clock.now,
      random: () => 1,
      holder,
      leaseMs: 10_000,
      ...options,
    });
  /** Queue `count` items for one domain, ids `prefix0`, `prefix1`… */
  const enqueue = async (prefix: string, count: number) => {
    for (let i = 0; i < count; i++) {
      await enqueueOutbound(store, {
        module: "messages",
        from: "alice@here.test",
        to: [`${prefix}${i}@there.test`],
        id: `${prefix}${i}`,
        payload: {},
      }, clock.now);
    }
  };
  /** Resolves once `test` holds (the peer's calls run on their own). */
  const until = async (test: () => boolean) => {
    while (!test()) await new Promise((r) => setTimeout(r, 1));
  };
  return { kv, store, clock, attempts, instance, enqueue, until };
}

/** A promise and the function that resolves it. */
function gate(): { opened: Promise<void>; open: () => void } {
  let open = () => {};
  const opened = new Promise<void>((resolve) => open = resolve);
  return { opened, open };
}

Deno.test("queue: an item another instance took over while this one was stuck past its lease is left to it; a waiting item's lease is renewed before its attempt", async () => {
  const q = await sharedQueue();
  try {
    // 17 items for one domain: 16 go at once, the 17th waits for a slot.
    await q.enqueue("m", 17);
    const stuck = gate();
    const passA = q.instance("a", (h) => h === "a" ? stuck.opened : undefined)
      .runOnce();
    await q.until(() => q.attempts.size === 16);
    const waiting = (await q.store.list(100)).find((item) =>
      !q.attempts.has(item.delivery_id)
    )!;
    // Instance a is stuck past its leases: b takes over every item.
    q.clock.now += 11_000;
    await q.instance("b").runOnce();
    assert.deepEqual(await q.store.list(100), []);
    assert.deepEqual(q.attempts.get(waiting.delivery_id), ["b"]);
    // When a comes back, it does not send the item b delivered.
    stuck.open();
    await passA;
    assert.deepEqual(q.attempts.get(waiting.delivery_id), ["b"]);

    // A waiting item whose lease has run more than a third is renewed
    // before its attempt: another instance does not take it meanwhile.
    q.attempts.clear();
    const slow = gate();
    const slowLast = gate();
    const started = q.clock.now;
    await q.enqueue("n", 17);
    // The first 16 take 5 s of the 10 s lease, the 17th longer.
    const passC = q.instance(
      "c",
      () => q.attempts.size <= 16 ? slow.opened : slowLast.opened,
    ).runOnce();
    await q.until(() => q.attempts.size === 16);
    q.clock.now = started + 5_000;
    slow.open();
    await q.until(() => q.attempts.size === 17);
    const last = [...q.attempts.keys()].at(-1)!;
    // Past the lease c took at the start, within the one it renewed.
    q.clock.now = started + 12_000;
    await q.instance("b").runOnce();
    assert.deepEqual(q.attempts.get(last), ["c"]);
    slowLast.open();
    await passC;
    assert.deepEqual(q.attempts.get(last), ["c"]);
    assert.deepEqual(await q.store.list(100), []);
  } finally {
    q.kv.close();
  }
});

Deno.test("queue: a long attempt keeps its lease: another instance does not take the item while it runs", async () => {
  const q = await sharedQueue();
  const slow = gate();
  /** The renewals `a` scheduled, to run when the test says. */
  const timers: (() => void)[] = [];
  try {
    await q.enqueue("big", 1);
    const passA = q.instance("a", () => slow.opened, {
      leaseMs: 9_000,
      schedule: (fn) => {
        timers.push(fn);
        return () => {
          const i = timers.indexOf(fn);
          if (i >= 0) timers.splice(i, 1);
        };
      },
    }).runOnce();
    await q.until(() => q.attempts.size === 1);
    // Every 3 s of the 9 s lease, the renewal runs.
    for (let i = 0; i < 4; i++) {
      q.clock.now += 3_000;
      const renew = timers.shift();
      assert.ok(renew && timers.length === 0, "one renewal scheduled");
      renew();
      // The next is scheduled once this one is stored.
      await q.until(() => timers.length > 0);
    }
    // 12 s in: past the lease a took, within the one it renewed.
    await q.instance("b").runOnce();
    assert.deepEqual([...q.attempts.values()], [["a"]]);
    slow.open();
    await passA;
    assert.deepEqual([...q.attempts.values()], [["a"]]);
    assert.deepEqual(await q.store.list(10), []);
    assert.equal(timers.length, 0);
  } finally {
    q.kv.close();
  }
});
