/**
 * A remote module as a real process (`deno task module-run`), for tests.
 *
 * @module
 */

import { cleanEnv, taskArgs } from "./process.ts";

/** A running `module-run`. */
export interface RemoteModuleProcess {
  /** The child. */
  child: Deno.ChildProcess;
  /** Its output so far (stdout and stderr). */
  output(): string;
  /** Resolves with its exit code. */
  exited: Promise<number>;
  /** SIGKILL (nothing is closed cleanly) and wait for it to end. */
  kill(): Promise<void>;
}

/** Start `deno task module-run DIR ...args`. */
export function startRemoteModule(
  dir: string,
  args: string[],
): RemoteModuleProcess {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", ...taskArgs("module-run"), dir, ...args],
    env: cleanEnv({}),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  let text = "";
  const decoder = new TextDecoder();
  const read = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream) text += decoder.decode(chunk);
  };
  const reading = Promise.all([read(child.stdout), read(child.stderr)]);
  const exited = child.status.then(async (status) => {
    await reading;
    return status.code;
  });
  return {
    child,
    output: () => text,
    exited,
    async kill() {
      try {
        child.kill("SIGKILL");
      } catch {
        // Gone already.
      }
      await exited;
    },
  };
}
