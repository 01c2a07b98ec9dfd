/**
 * Process isolation: the module in a dedicated `deno run` subprocess, BSON
 * frames over its stdin and stdout (its stderr goes to the server log), the
 * placement of every module not shipped with the server.
 *
 * What confines it:
 * - permissions as flags: exactly the manifest's grants plus its own
 *   database, never `--allow-run` (so it cannot signal the server), `--ffi`
 *   or `--sys`; `--no-prompt`;
 * - loading: the checked import map that blocks every other file,
 *   `--cached-only`, and no remote code but from granted hosts (imports.ts);
 * - an environment of only its granted variables and what Deno needs to find
 *   its cache;
 * - resources (limits.ts): JS heap and data segment capped by `memory_mb`,
 *   lower CPU priority, no core files, a descriptor limit; a hung process is
 *   killed (SIGKILL to Deno's own pid).
 *
 * The reader yields to the event loop every few frames, so a module that
 * floods its output cannot stall the server, and pipe backpressure slows the
 * flooder down (a message handler that returns a promise holds the reader
 * until it settles: module-run's slow link); a module that does not read its
 * input is stopped before the frames queued for it grow past a bound.
 *
 * @module
 */

import type { Logger } from "../../core/log/mod.ts";
import {
  decodeDocument,
  encodeDocument,
  FrameDecoder,
} from "../../core/wire/mod.ts";
import { MODULE_LIMITS } from "../bridge/envelope.ts";
import type { Manifest } from "../manifest.ts";
import { TokenBucket } from "../../shared/token_bucket.ts";
import type { Channel } from "./channel.ts";
import type { ModuleImports } from "./imports.ts";
import { cappedDeno } from "./limits.ts";
import { workerPermissions } from "./worker.ts";

/** Largest frame a module process may send. */
const MAX_FRAME = 16 * 1024 * 1024;
/** Frames handled before the reader lets the event loop run. */
const FRAMES_PER_TURN = 64;
/** Bytes queued for a module that does not read, before it is stopped. */
const MAX_UNREAD = 64 * 1024 * 1024;
/** Longest stderr line kept. */
const MAX_LINE = 500;
/** Variables Deno needs to find its cache (its own; the module cannot read them without a grant). */
const RUNTIME_ENV = ["DENO_DIR", "HOME", "XDG_CACHE_HOME", "PATH"];

/**
 * The `deno run` arguments of a manifest with its storage database `store`
 * and its checked imports: the same grants as a Worker's, as flags.
 */
export function processArgs(
  manifest: Manifest,
  imports: ModuleImports,
  store?: string,
): string[] {
  const flags = [...imports.flags, "--no-prompt", "--unstable-kv"];
  const granted = workerPermissions(manifest, store);
  for (const name of ["net", "read", "write", "env"] as const) {
    const list = granted[name];
    if (Array.isArray(list)) flags.push(`--allow-${name}=${list.join(",")}`);
  }
  flags.push(`--v8-flags=--max-old-space-size=${manifest.memoryMb}`);
  return ["run", ...flags, new URL(manifest.entry).pathname];
}

/** The environment of a module process: what it is granted, and what Deno needs. */
export function processEnv(manifest: Manifest): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1" };
  const all = Deno.env.toObject();
  for (const name of [...RUNTIME_ENV, ...manifest.permissions.env]) {
    if (name.endsWith("*")) {
      const prefix = name.slice(0, -1);
      for (const [key, value] of Object.entries(all)) {
        if (key.startsWith(prefix)) env[key] = value;
      }
    } else if (all[name] !== undefined) env[name] = all[name];
  }
  return env;
}

/** Start the module's entry in a capped subprocess. */
export async function startProcess(
  manifest: Manifest,
  options: { imports: ModuleImports; log: Logger; store?: string },
): Promise<Channel> {
  const log = options.log.child({ module: manifest.name });
  const { program, args } = await cappedDeno(
    processArgs(manifest, options.imports, options.store),
    manifest.memoryMb,
  );
  const child = new Deno.Command(program, {
    args,
    cwd: manifest.dir,
    env: processEnv(manifest),
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  let messageHandler:
    | ((doc: ReturnType<typeof decodeDocument>) => void | Promise<void>)
    | undefined;
  let exitHandler: ((reason: string) => void) | undefined;
  let stopped = false;
  let endReading!: () => void;
  /** Resolves when the channel stops (a held reader lets go). */
  const ended = new Promise<void>((resolve) => endReading = resolve);
  let unread = 0;
  const kill = () => {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
  };
  const exit = (reason: string) => {
    if (stopped) return;
    stopped = true;
    endReading();
    kill();
    exitHandler?.(reason);
  };
  (async () => {
    const decoder = new FrameDecoder(MAX_FRAME);
    let frames = 0;
    try {
      for await (const chunk of child.stdout) {
        for (const frame of decoder.pushOrThrow(chunk)) {
          if (stopped) return;
          // A handler that is not done holds the reading (backpressure).
          const held = messageHandler?.(decodeDocument(frame));
          if (held) await Promise.race([held, ended]);
          if (stopped) return;
          if (++frames % FRAMES_PER_TURN === 0) {
            await new Promise((resolve) => setTimeout(resolve, 0));
          }
        }
        if (stopped) return;
      }
    } catch (error) {
      log.warn("module_output_invalid", { error: String(error) });
      exit(`sent unreadable output: ${String(error).slice(0, 200)}`);
    }
  })();
  (async () => {
    // Lines are rate-limited like log lines; the excess is counted, not kept.
    const budget = new TokenBucket(
      MODULE_LIMITS.logPerSecond,
      2 * MODULE_LIMITS.logBurst,
    );
    let dropped = 0;
    const text = new TextDecoder();
    let rest = "";
    const line = (raw: string) => {
      if (!raw.trim()) return;
      if (!budget.take()) {
        dropped++;
        return;
      }
      if (dropped > 0) {
        log.warn("module_stderr_dropped", { lines: dropped });
        dropped = 0;
      }
      log.info("module_stderr", { line: raw.slice(0, MAX_LINE) });
    };
    for await (const chunk of child.stderr) {
      rest += text.decode(chunk, { stream: true });
      const lines = rest.split("\n");
      rest = lines.pop() ?? "";
      if (rest.length > MAX_LINE) rest = rest.slice(0, MAX_LINE);
      for (const l of lines) line(l);
    }
    line(rest);
    if (dropped > 0) log.warn("module_stderr_dropped", { lines: dropped });
  })();
  child.status.then((status) =>
    exit(
      `process exited with code ${status.code}${
        status.signal ? ` (${status.signal})` : ""
      }${status.code === 97 ? ": its memory limit could not be set" : ""}`,
    )
  );
  return {
    killable: true,
    send(doc) {
      if (stopped) return;
      const frame = encodeDocument(doc);
      unread += frame.length;
      if (unread > MAX_UNREAD) {
        exit(`does not read its input (${unread} bytes waiting)`);
        return;
      }
      writer.write(frame).then(
        () => unread -= frame.length,
        () => {},
      );
    },
    onMessage(handler) {
      messageHandler = handler;
    },
    onExit(handler) {
      exitHandler = handler;
    },
    stop() {
      stopped = true;
      endReading();
      kill();
      writer.close().catch(() => {});
    },
  };
}
