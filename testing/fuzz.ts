/**
 * Fuzzing a live server: random, mutated, wrongly typed, deeply nested,
 * oversized and huge frames, with unknown commands, before and after login.
 * The server must never crash, must answer every frame with a documented
 * code (or close that session, for a broken length prefix), must keep serving
 * other sessions, and its memory must stay bounded.
 *
 * `deno task fuzz [--frames N] [--seed S]`; a bounded run is part of the tests.
 *
 * @module
 */

import { BSON } from "bson";
import type { Response } from "../client/mod.ts";
import { ErrorCode } from "../shared/errors.ts";
import { login } from "./helpers.ts";
import { rss } from "./process.ts";
import { startAmtp } from "./server.ts";

/** What a fuzz run found. */
export interface FuzzReport {
  /** Frames sent. */
  frames: number;
  /** Responses received. */
  responses: number;
  /** Sessions the server closed (broken length prefixes). */
  closedSessions: number;
  /** Responses by error code. */
  codes: Record<number, number>;
  /** Server memory (RSS) before and after, bytes. */
  rssBefore: number;
  /** RSS after. */
  rssAfter: number;
  /** Problems found. */
  problems: string[];
  /** Seconds taken. */
  seconds: number;
}

const DOCUMENTED = new Set<number>(Object.values(ErrorCode));

/** A small seeded PRNG (mulberry32), so a failing run can be repeated. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Run the fuzzer against a fresh server process. */
export async function fuzz(
  options: { frames: number; seed?: number },
): Promise<FuzzReport> {
  const started = Date.now();
  const random = prng(options.seed ?? 1);
  const pick = <T>(items: T[]): T => items[Math.floor(random() * items.length)];
  const int = (n: number) => Math.floor(random() * n);
  const root = await Deno.makeTempDir({ prefix: "amtp-fuzz-" });
  // A server with an admin session (the canary, which must keep working) and a user to fuzz after login.
  const { server, connect, admin, adminToken, keys } = await startAmtp(
    root,
    "server",
  );
  const problems: string[] = [];
  const codes: Record<number, number> = {};
  let responses = 0;
  let closedSessions = 0;
  const pid = server.child.pid;
  const rssBefore = rss(pid);
  try {
    const userToken = await login(
      admin,
      "user",
      "u@bench.test",
      keys.get("u@bench.test")!,
    );
    const canary = admin;
    const commands = [
      "ping",
      "info",
      "admin_login_request",
      "admin_login_verify",
      "user_login_request",
      "user_login_verify",
      "admin_get_domains",
      "admin_add_user",
      "admin_set_alias",
      "user_userinfo",
      "user_set_profile",
      "user_register",
      "no_such_command",
      "",
      "x".repeat(300),
    ];
    const moduleCommands = [
      "send",
      "list",
      "get",
      "mark",
      "search",
      "changes",
      "attachment_upload_chunk",
      "nope",
    ];
    const anyValue = (depth = 0): unknown => {
      switch (int(depth > 3 ? 6 : 9)) {
        case 0:
          return int(1 << 30) - (1 << 29);
        case 1:
          return random() * 1e6;
        case 2:
          return "s".repeat(int(40));
        case 3:
          return random() < 0.5;
        case 4:
          return null;
        case 5:
          return new Uint8Array(int(64));
        case 6:
          return Array.from({ length: int(5) }, () => anyValue(depth + 1));
        case 7:
          return { a: anyValue(depth + 1), b: anyValue(depth + 1) };
        default:
          return new Date(int(2 ** 40));
      }
    };
    const params = (): Record<string, unknown> => {
      const out: Record<string, unknown> = {};
      for (
        const name of [
          "user",
          "address",
          "domain",
          "to",
          "ids",
          "id",
          "verification_string",
          "limit",
          "cursor",
          "name",
          "photo",
          "data",
          "admin_token",
        ]
      ) {
        if (random() < 0.3) out[name] = anyValue();
      }
      return out;
    };
    const frame = (i: number): Uint8Array => {
      const requestID = i;
      switch (int(100) === 0 ? 3 : pick([0, 1, 2, 4, 5, 6, 7, 8, 9])) {
        case 0: { // random bytes with a valid length prefix
          const n = 5 + int(400);
          const bytes = new Uint8Array(n);
          for (let k = 4; k < n; k++) bytes[k] = int(256);
          new DataView(bytes.buffer).setInt32(0, n, true);
          return bytes;
        }
        case 1: { // a valid request with flipped bytes (length kept)
          const bytes = new Uint8Array(
            BSON.serialize({ command: pick(commands), requestID, ...params() }),
          );
          for (let k = 0; k < 1 + int(4); k++) {
            bytes[4 + int(bytes.length - 4)] ^= 1 << int(8);
          }
          return bytes;
        }
        case 2: { // deeply nested
          let doc: Record<string, unknown> = { x: 1 };
          const depth = 50 + int(400);
          for (let d = 0; d < depth; d++) doc = { n: doc };
          return new Uint8Array(
            BSON.serialize({ command: pick(commands), requestID, nested: doc }),
          );
        }
        case 3: // a huge list (now and then: they are large)
          return new Uint8Array(
            BSON.serialize({
              command: pick(commands),
              requestID,
              to: Array.from({ length: 10_000 + int(20_000) }, (_, k) => k),
            }),
          );
        case 4: // after login: module requests with wrong parameters
          return new Uint8Array(
            BSON.serialize({
              command: pick(moduleCommands),
              module: pick(["messages", "example", "nosuch"]),
              requestID,
              user_token: userToken,
              ...params(),
            }),
          );
        case 5: // after login: core commands with a token of either kind
          return new Uint8Array(
            BSON.serialize({
              command: pick(commands),
              requestID,
              user_token: userToken,
              admin_token: random() < 0.5 ? adminToken : "bad",
              ...params(),
            }),
          );
        case 6: // an unusable requestID or command type
          return new Uint8Array(
            BSON.serialize({
              command: anyValue(),
              requestID: anyValue(),
              ...params(),
            }),
          );
        default: // well-formed requests with random parameters
          return new Uint8Array(
            BSON.serialize({ command: pick(commands), requestID, ...params() }),
          );
      }
    };
    let sent = 0;
    const batch = 500;
    while (sent < options.frames) {
      const client = await connect();
      const got: Response[] = [];
      client.onStray((r) => got.push(r));
      let closed = false;
      client.closed.then(() => closed = true);
      const count = Math.min(batch, options.frames - sent);
      // Now and then, a broken length prefix at the end of a batch: the server closes that session.
      const breakIt = random() < 0.1;
      for (let k = 0; k < count; k++) await client.sendRaw(frame(sent + k));
      if (breakIt) {
        await client.sendRaw(new Uint8Array([0xff, 0xff, 0xff, 0x7f]));
      }
      const expect = count + (breakIt ? 1 : 0);
      const end = Date.now() + 30_000;
      while (got.length < expect && Date.now() < end && !closed) {
        await new Promise((r) => setTimeout(r, 10));
      }
      if (breakIt) {
        // The server answers what it read before the broken prefix, then says why and closes.
        await Promise.race([
          client.closed,
          new Promise((r) => setTimeout(r, 5000)),
        ]);
        if (!closed) {
          problems.push("the session with a broken prefix stayed open");
        }
        if (!got.some((r) => r.error === ErrorCode.FRAME_TOO_LARGE)) {
          problems.push("a broken prefix was not answered with code 2");
        }
        closedSessions++;
      }
      if (got.length < expect) {
        problems.push(
          `batch at ${sent}: ${got.length} of ${expect} frames answered`,
        );
      }
      for (const r of got) {
        responses++;
        codes[r.error] = (codes[r.error] ?? 0) + 1;
        if (!DOCUMENTED.has(r.error as never)) {
          problems.push(`undocumented code ${r.error}: ${r.message}`);
        }
      }
      client.close();
      sent += count;
      // The canary session keeps working.
      const pong = await canary.request("ping").catch((e) =>
        ({ error: -1, message: String(e) }) as Response
      );
      if (pong.error !== 0) {
        problems.push(
          `canary ping failed after ${sent} frames: ${pong.message}`,
        );
      }
    }
    canary.close();
  } finally {
    const rssAfter = (() => {
      const value = rss(pid);
      if (value === 0) problems.push("the server process is gone");
      return value;
    })();
    const code = await server.stop("SIGTERM");
    if (code !== 0) problems.push(`server exited with ${code}`);
    await Deno.remove(root, { recursive: true });
    const report: FuzzReport = {
      frames: options.frames,
      responses,
      closedSessions,
      codes,
      rssBefore,
      rssAfter,
      problems,
      seconds: (Date.now() - started) / 1000,
    };
    if (rssAfter - rssBefore > 300 * 1024 * 1024) {
      problems.push(
        `server memory grew by ${
          ((rssAfter - rssBefore) / 2 ** 20).toFixed(0)
        } MiB`,
      );
    }
    fuzzReport = report;
  }
  return fuzzReport!;
}

let fuzzReport: FuzzReport | undefined;
