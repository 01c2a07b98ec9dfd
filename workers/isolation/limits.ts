/**
 * Resource caps of a module process (and of the `deno info` run that checks
 * a module's code): lower CPU priority, no core files, a descriptor limit and
 * a memory limit, set by `sh` before it becomes `deno` (`exec`), so the
 * process id the host holds is Deno's own and SIGKILL ends it.
 *
 * Memory: `--max-old-space-size` bounds only the JavaScript heap; ArrayBuffers
 * and native allocations live outside it. RLIMIT_DATA bounds them all, but a
 * bare Deno already has about 540 MB of data segment at start (V8's
 * reservations) and aborts when it cannot reserve them. So the limit is that
 * baseline, measured once on this machine, plus the module's `memory_mb`,
 * plus {@link MEMORY_SLACK_MB} for the runtime's own allocations (its KV, its
 * code). Linux only: without /proc the data limit is left out.
 *
 * @module
 */

/** Room for the runtime's own allocations on top of a module's `memory_mb`. */
export const MEMORY_SLACK_MB = 64;
/** Niceness of module processes: the server's own threads come first. */
export const MODULE_NICE = 10;
/** Open descriptors a module process may hold. */
export const MODULE_DESCRIPTORS = 1024;

let bare: Promise<number | undefined> | undefined;

/**
 * The data segment (VmData, KiB) of a bare `deno` on this machine, measured
 * once per server; undefined where /proc is missing.
 */
export function bareDenoDataKib(): Promise<number | undefined> {
  bare ??= (async () => {
    try {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "eval",
          "--no-config",
          'console.log(Deno.readTextFileSync("/proc/self/status").match(/VmData:\\s*(\\d+)/)[1])',
        ],
        stdout: "piped",
        stderr: "null",
      }).output();
      const kib = Number(new TextDecoder().decode(out.stdout).trim());
      return out.success && kib > 0 ? kib : undefined;
    } catch {
      return undefined;
    }
  })();
  return bare;
}

/** A program with its arguments. */
export interface CommandLine {
  /** The program. */
  program: string;
  /** Its arguments. */
  args: string[];
}

/**
 * `deno <args>` under the caps, with `memoryMb` of data beyond a bare Deno's
 * (plus the slack). If the memory limit cannot be set, the shell exits with
 * code 97 instead of running Deno uncapped.
 */
export async function cappedDeno(
  args: string[],
  memoryMb: number,
): Promise<CommandLine> {
  const base = await bareDenoDataKib();
  const data = base === undefined
    ? ""
    : `ulimit -d ${base + (memoryMb + MEMORY_SLACK_MB) * 1024} || exit 97; `;
  const script = `ulimit -c 0; ulimit -n ${MODULE_DESCRIPTORS} 2>/dev/null; ` +
    `${data}exec nice -n ${MODULE_NICE} "$@"`;
  return {
    program: "sh",
    args: ["-c", script, "sh", Deno.execPath(), ...args],
  };
}
