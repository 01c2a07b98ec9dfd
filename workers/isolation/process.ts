/**
 * Process isolation: the same module code in a `deno run` subprocess with the
 * same permissions as flags and a memory cap, BSON frames over its stdin and
 * stdout (its stderr goes to the server log). Slower to start and to call, but
 * a hung process can be killed.
 *
 * @module
 */

import type { Logger } from "../../core/log/mod.ts";
import {
  decodeDocument,
  encodeDocument,
  FrameDecoder,
} from "../../core/wire/mod.ts";
import type { Manifest } from "../manifest.ts";
import type { Channel } from "./channel.ts";
import { workerPermissions } from "./worker.ts";

/** Largest frame a module process may send. */
const MAX_FRAME = 16 * 1024 * 1024;

/**
 * The `deno run` flags of a manifest with its storage database `store`: the
 * same grants as a Worker's, as flags.
 */
export function processFlags(manifest: Manifest, store?: string): string[] {
  const flags = ["--no-prompt", "--unstable-kv"];
  const granted = workerPermissions(manifest, store);
  for (const name of ["net", "read", "write", "env"] as const) {
    const list = granted[name];
    if (Array.isArray(list)) flags.push(`--allow-${name}=${list.join(",")}`);
  }
  flags.push(`--v8-flags=--max-old-space-size=${manifest.memoryMb}`);
  return flags;
}

/** Start the module's entry in a subprocess. */
export function startProcess(
  manifest: Manifest,
  options: { config: string; log: Logger; store?: string },
): Channel {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      `--config=${options.config}`,
      ...processFlags(manifest, options.store),
      new URL(manifest.entry).pathname,
    ],
    env: { AMTP_MODULE_PROCESS: "1", NO_COLOR: "1" },
    clearEnv: false,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const writer = child.stdin.getWriter();
  let messageHandler:
    | ((doc: ReturnType<typeof decodeDocument>) => void)
    | undefined;
  let exitHandler: ((reason: string) => void) | undefined;
  let stopped = false;
  const exit = (reason: string) => {
    if (stopped) return;
    stopped = true;
    exitHandler?.(reason);
  };
  (async () => {
    const decoder = new FrameDecoder(MAX_FRAME);
    try {
      for await (const chunk of child.stdout) {
        for (const frame of decoder.pushOrThrow(chunk)) {
          messageHandler?.(decodeDocument(frame));
        }
      }
    } catch (error) {
      options.log.warn("module_output_invalid", {
        module: manifest.name,
        error: String(error),
      });
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
    }
  })();
  (async () => {
    const text = new TextDecoder();
    let rest = "";
    for await (const chunk of child.stderr) {
      rest += text.decode(chunk, { stream: true });
      const lines = rest.split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) {
        if (line.trim()) {
          options.log.info("module_stderr", {
            module: manifest.name,
            line: line.slice(0, 500),
          });
        }
      }
    }
  })();
  child.status.then((status) =>
    exit(
      `process exited with code ${status.code}${
        status.signal ? ` (${status.signal})` : ""
      }`,
    )
  );
  return {
    killable: true,
    send(doc) {
      if (stopped) return;
      writer.write(encodeDocument(doc)).catch(() => {});
    },
    onMessage(handler) {
      messageHandler = handler;
    },
    onExit(handler) {
      exitHandler = handler;
    },
    stop() {
      stopped = true;
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      writer.close().catch(() => {});
    },
  };
}
