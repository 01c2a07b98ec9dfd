/**
 * The process's open-file limit (RLIMIT_NOFILE): raised to the hard limit at
 * start, and read so that the TCP listener refuses connections before the
 * process runs out of descriptors.
 *
 * Deno has no getrlimit/setrlimit and reads of `/proc/self/*` need
 * `--allow-all`, so both go through util-linux `prlimit` and `ls` (the
 * server runs with `--allow-run`). Deno 2.9 already raises its soft limit to
 * the hard limit at start (measured); raising again is a cheap check.
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

async function run(command: string, args: string[]): Promise<string> {
  const output = await new Deno.Command(command, {
    args,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  if (!output.success) {
    throw new Error(decoder.decode(output.stderr).trim() || command);
  }
  return decoder.decode(output.stdout);
}

/** This process's limit (from `prlimit`); undefined where it cannot tell. */
export async function readDescriptorLimit(): Promise<
  DescriptorLimit | undefined
> {
  try {
    const text = await run("prlimit", [
      `--pid=${Deno.pid}`,
      "--nofile",
      "--raw",
      "--noheadings",
      "--output=SOFT,HARD",
    ]);
    const [soft, hard] = text.trim().split(/\s+/).map((s) =>
      s === "unlimited" ? Infinity : Number(s)
    );
    return Number.isNaN(soft) || Number.isNaN(hard)
      ? undefined
      : { soft, hard };
  } catch {
    return undefined;
  }
}

/** Descriptors this process has open now; undefined where it cannot tell. */
export async function countOpenDescriptors(): Promise<number | undefined> {
  try {
    const text = await run("ls", ["-1", `/proc/${Deno.pid}/fd`]);
    return text.split("\n").filter((line) => line !== "").length;
  } catch {
    return undefined;
  }
}

/**
 * Raise this process's soft limit to its hard limit. Logs a warning when it
 * cannot.
 *
 * @returns the limit in force afterwards
 */
export async function raiseDescriptorLimit(
  log: Logger,
): Promise<DescriptorLimit | undefined> {
  const before = await readDescriptorLimit();
  if (!before) {
    log.warn("descriptor_limit_unknown", {
      error: "prlimit (util-linux) not available",
    });
    return undefined;
  }
  if (before.soft >= before.hard || !isFinite(before.hard)) return before;
  let error = "";
  try {
    await run("prlimit", [`--pid=${Deno.pid}`, `--nofile=${before.hard}:`]);
  } catch (cause) {
    error = String(cause);
  }
  const after = await readDescriptorLimit() ?? before;
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
