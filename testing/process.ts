/**
 * Running the server and the CLI as real processes, with the permission
 * flags of the deno.json tasks.
 *
 * @module
 */

const ROOT = new URL("..", import.meta.url).pathname;
const CONFIG = JSON.parse(Deno.readTextFileSync(`${ROOT}deno.json`)) as {
  tasks: Record<string, string>;
};

/** The `deno run` flags of a task, with its script made absolute. */
export function taskArgs(task: string): string[] {
  const words = CONFIG.tasks[task].split(/\s+/).slice(2); // drop "deno run"
  return words.map((w) => w.endsWith(".ts") ? `${ROOT}${w}` : w);
}

/**
 * The environment of this test process without any `AMTP_*` variable, plus
 * `extra`: children see only the configuration a test gives them.
 */
export function cleanEnv(
  extra: Record<string, string>,
): Record<string, string> {
  // Federation lookups stay on loopback unless a test names its DNS server.
  const env: Record<string, string> = {
    NO_COLOR: "1",
    AMTP_DNS: "127.0.0.1:9",
    // The email gateway listens on a port: only the tests of email start it.
    AMTP_MODULES_OFF: "smtp",
    // The web app only where a test asks for it (its loopback port then any free one).
    AMTP_WEB: "off",
    AMTP_WEB_PORT: "0",
  };
  for (const [name, value] of Object.entries(Deno.env.toObject())) {
    if (!name.startsWith("AMTP_")) env[name] = value;
  }
  return { ...env, ...extra };
}

/** A server process. */
export interface ServerProcess {
  /** The child. */
  child: Deno.ChildProcess;
  /** The port it reported. */
  port: number;
  /** Its standard output so far. */
  stdout: () => string;
  /** Its standard error so far. */
  stderr: () => string;
  /** Send a signal and wait for the exit code. */
  stop(signal?: Deno.Signal): Promise<number>;
}

async function collect(stream: ReadableStream<Uint8Array>, into: string[]) {
  const decoder = new TextDecoder();
  for await (const chunk of stream) into.push(decoder.decode(chunk));
}

/**
 * Start `main.ts` in `cwd` with `env`, waiting until it says where it
 * listens. `options.args` runs Deno with other arguments (`["task",
 * "start"]`, as a user does); `options.denoFlags` adds flags of Deno to the
 * start task's (the inspector, for one); `options.exactEnv` gives the child
 * `env` and nothing else.
 */
export async function startServerProcess(
  cwd: string,
  env: Record<string, string>,
  options: { args?: string[]; denoFlags?: string[]; exactEnv?: boolean } = {},
): Promise<ServerProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: options.args ??
      ["run", ...options.denoFlags ?? [], ...taskArgs("start")],
    cwd,
    env: options.exactEnv ? env : cleanEnv(env),
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const out: string[] = [];
  const err: string[] = [];
  const reading = Promise.all([
    collect(child.stdout, out),
    collect(child.stderr, err),
  ]);
  const end = Date.now() + 30_000;
  let port = 0;
  while (Date.now() < end) {
    const match = out.join("").match(/listening on [^ ]+:(\d+)/);
    if (match) {
      port = Number(match[1]);
      break;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  if (!port) {
    try {
      child.kill("SIGKILL");
    } catch { /* gone */ }
    await child.status;
    await reading;
    throw new Error(`server did not start:\n${out.join("")}\n${err.join("")}`);
  }
  return {
    child,
    port,
    stdout: () => out.join(""),
    stderr: () => err.join(""),
    async stop(signal = "SIGTERM") {
      try {
        child.kill(signal);
      } catch { /* gone */ }
      const status = await child.status;
      await reading;
      return status.code;
    },
  };
}

/**
 * The CLI's config folder for a test: beside its session file
 * (`AMTP_CLI_STATE`), never the user's own.
 */
export function cliEnv(env: Record<string, string>): Record<string, string> {
  const state = env.AMTP_CLI_STATE;
  return {
    AMTP_CONFIG: state
      ? `${state.replace(/[^/]*$/, "") || "."}amtp-config`
      : `${Deno.makeTempDirSync({ prefix: "amtp-config-" })}`,
    ...env,
  };
}

/** Run the CLI; returns exit code and output. */
export async function runCli(
  args: string[],
  env: Record<string, string>,
  cwd = ROOT,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", ...taskArgs("amtp"), ...args],
    cwd,
    env: cleanEnv(cliEnv(env)),
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Resident memory of a process, bytes (through `ps`: Deno guards /proc of other processes). */
export function rss(pid: number): number {
  const out = new Deno.Command("ps", {
    args: ["-o", "rss=", "-p", String(pid)],
    stdout: "piped",
  }).outputSync();
  return Number(new TextDecoder().decode(out.stdout).trim() || 0) * 1024;
}

/**
 * CPU seconds of each thread of a process by `name/tid` (utime and stime from
 * `/proc/<pid>/task/*\/stat`, read through `sh`: Deno guards /proc of other
 * processes). The KV (SQLite) threads of Deno are named `sw-0`.
 */
export function threadCpu(pid: number): Map<string, number> {
  const out = new Deno.Command("sh", {
    args: ["-c", `cat /proc/${pid}/task/*/stat 2>/dev/null`],
    stdout: "piped",
  }).outputSync();
  const cpu = new Map<string, number>();
  for (const stat of new TextDecoder().decode(out.stdout).split("\n")) {
    if (!stat) continue;
    const tid = stat.slice(0, stat.indexOf(" "));
    const name = stat.slice(stat.indexOf("(") + 1, stat.lastIndexOf(")"));
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Clock ticks, 100 a second.
    cpu.set(`${name}/${tid}`, (Number(fields[11]) + Number(fields[12])) / 100);
  }
  return cpu;
}

/** CPU seconds used between two {@link threadCpu} readings, by thread name, most first. */
export function cpuSince(
  before: Map<string, number>,
  after: Map<string, number>,
): { total: number; threads: [string, number][] } {
  const byName = new Map<string, number>();
  for (const [id, s] of after) {
    const name = id.slice(0, id.lastIndexOf("/"));
    const used = s - (before.get(id) ?? 0);
    if (used > 0) byName.set(name, (byName.get(name) ?? 0) + used);
  }
  const threads = [...byName].sort((a, b) => b[1] - a[1]);
  return { total: threads.reduce((t, [, s]) => t + s, 0), threads };
}
