import assert from "node:assert/strict";
import { Logger } from "../log/mod.ts";
import {
  type Command,
  defineCommand,
  Dispatcher,
  ErrorCode,
} from "../protocol/mod.ts";
import type { Connection } from "../transport/mod.ts";
import { decodeDocument, type Document, encodeDocument } from "../wire/mod.ts";
import { runSession, type SessionLimits, SessionRegistry } from "./mod.ts";

/** A connection in memory: frames go in with `receive`, what the session sends is kept. */
class MemoryConnection implements Connection {
  readonly id = `mem${Math.random().toString(36).slice(2)}`;
  readonly transport = "websocket" as const;
  readonly remoteAddr = "192.0.2.1";
  readonly sent: Document[] = [];
  readonly closed: Promise<void>;
  closeReason?: string;
  /** Sends held back (a client that does not read); released by {@link drain}. */
  holding = false;
  #held: (() => void)[] = [];
  #incoming: (Uint8Array | null)[] = [];
  #wake?: () => void;
  #markClosed!: () => void;

  constructor() {
    this.closed = new Promise((resolve) => this.#markClosed = resolve);
  }

  receive(doc: Document | Uint8Array): void {
    this.#incoming.push(doc instanceof Uint8Array ? doc : encodeDocument(doc));
    this.#wake?.();
  }

  end(): void {
    this.#incoming.push(null);
    this.#wake?.();
  }

  async *frames(): AsyncIterable<Uint8Array> {
    while (true) {
      if (this.#incoming.length === 0) {
        await new Promise<void>((resolve) => this.#wake = resolve);
        continue;
      }
      const next = this.#incoming.shift()!;
      if (next === null) return;
      yield next;
    }
  }

  send(frame: Uint8Array): Promise<void> {
    this.sent.push(decodeDocument(frame));
    if (!this.holding) return Promise.resolve();
    return new Promise((resolve) => this.#held.push(resolve));
  }

  drain(): void {
    this.holding = false;
    for (const resolve of this.#held.splice(0)) resolve();
  }

  close(reason?: string): void {
    this.closeReason ??= reason;
    this.#markClosed();
    this.end();
  }
}

const LIMITS: SessionLimits = {
  maxInflight: 64,
  rateLimit: 1000,
  maxFrame: 1024 * 1024,
  idleTimeoutMs: 60_000,
};

/** A session over a memory connection, with these commands. */
function session(commands: Command[], limits: Partial<SessionLimits> = {}) {
  const log = new Logger({ sink: () => {} });
  const dispatcher = new Dispatcher({ log }).register(...commands);
  const registry = new SessionRegistry({ log });
  const conn = new MemoryConnection();
  const done = runSession(conn, {
    dispatcher,
    registry,
    limits: { ...LIMITS, ...limits },
    log,
  });
  return { conn, registry, done };
}

async function until(what: () => boolean, label: string): Promise<void> {
  for (let i = 0; i < 400 && !what(); i++) {
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  assert.ok(what(), `never: ${label}`);
}

/** A command that waits until released, counting how many started. */
function gate() {
  let started = 0;
  const releases: (() => void)[] = [];
  const command = defineCommand({
    name: "wait",
    auth: "none",
    params: {},
    handler: async () => {
      started++;
      await new Promise<void>((resolve) => releases.push(resolve));
      return { waited: true };
    },
  });
  return {
    command,
    get started() {
      return started;
    },
    releaseAll: () => releases.splice(0).forEach((release) => release()),
  };
}

const echo = defineCommand({
  name: "echo",
  auth: "none",
  params: { text: { type: "string", optional: true, max: 100 } },
  handler: (p) => ({ text: p.text ?? "" }),
});

Deno.test("session: requests are answered concurrently; a fast one overtakes a slow one", async () => {
  const slow = gate();
  const s = session([slow.command, echo]);
  s.conn.receive({ command: "wait", requestID: 1 });
  s.conn.receive({ command: "echo", requestID: 2, text: "hi" });
  await until(() => s.conn.sent.length === 1, "the fast answer");
  assert.deepEqual(s.conn.sent[0], {
    command: "echo",
    error: 0,
    requestID: 2,
    data: { text: "hi" },
  });
  slow.releaseAll();
  await until(() => s.conn.sent.length === 2, "the slow answer");
  assert.equal(s.conn.sent[1].requestID, 1);
  s.conn.end();
  await s.done;
});

Deno.test("session: past the in-flight cap, reading pauses until a response is written", async () => {
  const slow = gate();
  const s = session([slow.command], { maxInflight: 2 });
  for (let i = 0; i < 4; i++) s.conn.receive({ command: "wait", requestID: i });
  await until(() => slow.started === 2, "two started");
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(slow.started, 2, "the third waits for a slot");
  // Answers that are not written (the client does not read) keep their slots.
  s.conn.holding = true;
  slow.releaseAll();
  await until(() => s.conn.sent.length === 2, "two answers handed over");
  await new Promise((resolve) => setTimeout(resolve, 20));
  assert.equal(slow.started, 2, "unwritten answers hold the slots");
  s.conn.drain();
  await until(() => slow.started === 4, "the rest started");
  slow.releaseAll();
  s.conn.end();
  await s.done;
});

Deno.test("session: past the rate, requests are answered RATE_LIMITED unprocessed", async () => {
  let ran = 0;
  const counted = defineCommand({
    name: "count",
    auth: "none",
    params: {},
    handler: () => ({ ran: ++ran }),
  });
  // 2 a second, a burst of 4: of ten at once, four run.
  const s = session([counted], { rateLimit: 2 });
  for (let i = 0; i < 10; i++) {
    s.conn.receive({ command: "count", requestID: i });
  }
  await until(() => s.conn.sent.length === 10, "ten answers");
  const limited = s.conn.sent.filter((r) => r.error === ErrorCode.RATE_LIMITED);
  assert.equal(limited.length, 6);
  assert.equal(ran, 4);
  assert.deepEqual(limited[0].data, { retry_after: 1 });
  s.conn.end();
  await s.done;
});

Deno.test("session: an unreadable document is answered MALFORMED and the session goes on; when the connection ends the session leaves the registry", async () => {
  const s = session([echo]);
  // A length prefix that says 5 bytes of a document: not BSON.
  s.conn.receive(new Uint8Array([5, 0, 0, 0, 1]));
  s.conn.receive({ command: "echo", requestID: "after", text: "still here" });
  await until(() => s.conn.sent.length === 2, "two answers");
  assert.equal(s.conn.sent[0].error, ErrorCode.MALFORMED);
  assert.equal(s.conn.sent[1].requestID, "after");
  s.conn.end();
  await s.done;
  await until(() => s.conn.closeReason !== undefined, "closed");
  assert.equal(s.registry.size, 0);
});

Deno.test("session: pushes reach the sessions bound to the address; a session that does not read them is closed", async () => {
  const log = new Logger({ sink: () => {} });
  const registry = new SessionRegistry({ log });
  const dispatcher = new Dispatcher({
    log,
    verifyToken: (_kind, token) =>
      Promise.resolve({ kind: "user", name: token, tokenHash: token }),
  }).register(defineCommand({
    name: "bind",
    auth: "user",
    params: {},
    handler: () => ({}),
  }));
  const alice = new MemoryConnection();
  const bob = new MemoryConnection();
  for (const conn of [alice, bob]) {
    runSession(conn, { dispatcher, registry, limits: LIMITS, log });
  }
  alice.receive({ command: "bind", user_token: "alice@x.test" });
  bob.receive({ command: "bind", user_token: "bob@x.test" });
  await until(() => alice.sent.length === 1 && bob.sent.length === 1, "bound");
  const push = { event: "hello", module: "m", data: { n: 1 } };
  assert.equal(await registry.push("alice@x.test", push, LIMITS.maxFrame), 1);
  // A push names the account it is for (a session may act for several).
  assert.deepEqual(alice.sent[1], { ...push, account: "alice@x.test" });
  assert.equal(bob.sent.length, 1);
  // Alice stops reading: pushes pile up until the backlog bound closes her.
  alice.holding = true;
  const big = { event: "big", module: "m", data: "x".repeat(900_000) };
  let reached = 1;
  for (let i = 0; i < 20 && reached === 1; i++) {
    reached = await registry.push("alice@x.test", big, LIMITS.maxFrame);
  }
  assert.equal(reached, 0);
  assert.equal(alice.closeReason, "slow consumer");
  bob.end();
});

Deno.test("session registry: a user's sessions share one transfer pace; another user's is its own", () => {
  const registry = new SessionRegistry();
  const MiB = 1024 * 1024;
  // 1 MiB/s per user, a burst of 256 KiB: 2 MiB leaves a debt of 1.75 MiB.
  const first = registry.transferWait(["a@x"], 2 * MiB, MiB);
  assert.ok(first > 1740 && first <= 1750, String(first));
  // Another user is not held up by a's debt.
  const other = registry.transferWait(["b@x"], 2 * MiB, MiB);
  assert.ok(other > 1740 && other <= 1750, String(other));
  // a again (from any of a's sessions): behind the first debt.
  const again = registry.transferWait(["a@x"], MiB, MiB);
  assert.ok(again > 2740 && again <= 2750, String(again));
  // A session acting for both waits for the slower.
  const both = registry.transferWait(["a@x", "b@x"], MiB, MiB);
  assert.ok(both > 3740 && both <= 3750, String(both));
});
