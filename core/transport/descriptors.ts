/**
 * The process's open-file limit (RLIMIT_NOFILE): raised to the hard limit at
 * start, and read so that the TCP listener refuses connections before the
 * process runs out of descriptors.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";

/** Soft and hard limit on open descriptors; Infinity when unlimited. */
export interface DescriptorLimit {
  /** The limit in force. */
  soft: number;
  /** The most the soft limit may be raised to without privileges. */
  hard: number;
}

/** Read the limit from `/proc/self/limits`; undefined where there is none. */
export function readDescriptorLimit(): DescriptorLimit | undefined {
  let text: string;
  try {
    text = Deno.readTextFileSync("/proc/self/limits");
  } catch {
    return undefined;
  }
  const match = text.match(/^Max open files\s+(\S+)\s+(\S+)/m);
  if (!match) return undefined;
  const value = (s: string) => s === "unlimited" ? Infinity : Number(s);
  return { soft: value(match[1]), hard: value(match[2]) };
}

/**
 * Raise this process's soft limit to its hard limit with `prlimit` (util-linux;
 * Deno has no setrlimit). Logs a warning when it cannot.
 *
 * @returns the limit in force afterwards
 */
export async function raiseDescriptorLimit(
  log: Logger,
): Promise<DescriptorLimit | undefined> {
  const before = readDescriptorLimit();
  if (!before || before.soft >= before.hard || !isFinite(before.hard)) {
    return before;
  }
  let error = "";
  try {
    const output = await new Deno.Command("prlimit", {
      args: [`--pid=${Deno.pid}`, `--nofile=${before.hard}:`],
      stdout: "null",
      stderr: "piped",
    }).output();
    error = new TextDecoder().decode(output.stderr).trim();
  } catch (cause) {
    error = String(cause);
  }
  const after = readDescriptorLimit() ?? before;
  if (after.soft < before.hard) {
    log.warn("descriptor_limit_not_raised", {
      soft: after.soft,
      hard: before.hard,
      error: error || "prlimit did not change the limit",
    });
  } else {
    log.info("descriptor_limit_raised", { from: before.soft, to: after.soft });
  }
  return after;
}
