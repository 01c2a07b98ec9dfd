/**
 * The README walk-through, run as a newcomer runs it: in a fresh copy of the
 * repository (a git repository of its own), with a home folder of its own,
 * `deno task start`, then every command of "First steps with the CLI" as
 * written (Bob's `watch` in the background). Every command must succeed and
 * the copy must stay clean (`git status`): keys and sessions go to the
 * config folder, never into the repository.
 *
 * The deviations: the server listens on a free port (AMTP_PORT=0) instead of
 * 4433 (the CLI finds it from the data folder, as it would 4433), `/tmp/` of
 * the commands is a folder of the test's, MESSAGE_ID is the id Bob's inbox
 * printed, and `watch` stops after one message.
 */

import assert from "node:assert/strict";
import { startServerProcess } from "../testing/process.ts";
import { waitFor } from "../testing/helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;

async function run(
  command: string,
  args: string[],
  options: { cwd: string; env: Record<string, string> },
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(command, {
    args,
    cwd: options.cwd,
    env: options.env,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder();
  return {
    code: out.code,
    stdout: text.decode(out.stdout),
    stderr: text.decode(out.stderr),
  };
}

/** The shell lines of the README's walk-through, comments removed. */
function walkThrough(readme: string): string[] {
  const part = readme.slice(
    readme.indexOf("## First steps with the CLI"),
    readme.indexOf("## Configuration"),
  );
  const lines: string[] = [];
  for (const block of part.matchAll(/```sh\n([\s\S]*?)```/g)) {
    for (const line of block[1].split("\n")) {
      const command = line.replace(/\s+#\s.*$/, "").trim();
      if (command) lines.push(command);
    }
  }
  return lines;
}

Deno.test("readme: the walk-through works from a fresh copy and leaves git status clean", async () => {
  const root = await Deno.makeTempDir({ prefix: "amtp-readme-" });
  const clone = `${root}/amtp`;
  const home = `${root}/home`;
  const tmp = `${root}/tmp`;
  await Deno.mkdir(home);
  await Deno.mkdir(tmp);
  const denoDir = (JSON.parse(
    (await run(Deno.execPath(), ["info", "--json"], {
      cwd: ROOT,
      env: { PATH: Deno.env.get("PATH") ?? "" },
    })).stdout,
  ) as { denoDir: string }).denoDir;
  const env = {
    PATH: `${Deno.execPath().replace(/\/[^/]*$/, "")}:${
      Deno.env.get("PATH") ?? ""
    }`,
    HOME: home,
    DENO_DIR: denoDir,
    NO_COLOR: "1",
  };
  const git = (...args: string[]) =>
    run("git", ["-c", "user.name=t", "-c", "user.email=t@t", ...args], {
      cwd: clone,
      env,
    });
  let server: Awaited<ReturnType<typeof startServerProcess>> | undefined;
  let watcher: Deno.ChildProcess | undefined;
  let watcherOut: Promise<{ stdout: string; stderr: string }> | undefined;
  let watcherText = "";
  try {
    // A fresh copy of what is committed and changed here (what a clone has).
    const tracked = (await run("git", ["ls-files", "-z"], { cwd: ROOT, env }))
      .stdout.split("\0").filter(Boolean);
    for (const file of tracked) {
      const to = `${clone}/${file}`;
      await Deno.mkdir(to.replace(/\/[^/]*$/, ""), { recursive: true });
      await Deno.copyFile(`${ROOT}${file}`, to).catch((error) => {
        // A file deleted in the working tree but not yet in the index.
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      });
    }
    assert.equal((await git("init", "-q")).code, 0);
    await git("add", "-A");
    assert.equal((await git("commit", "-q", "-m", "fresh")).code, 0);

    // `deno task start`, on a free port.
    server = await startServerProcess(clone, { ...env, AMTP_PORT: "0" }, {
      args: ["task", "start"],
      exactEnv: true,
    });
    assert.doesNotMatch(server.stderr(), /env-file|was not found/);

    const readme = await Deno.readTextFile(`${clone}/README.md`);
    let messageId = "";
    const outputs: string[] = [];
    for (const line of walkThrough(readme)) {
      let command = line.replaceAll("/tmp/", `${tmp}/`);
      if (/\bwatch\b/.test(command)) {
        // Another terminal: in the background, until one message arrives.
        watcher = new Deno.Command("bash", {
          args: ["-c", `${command} --count 1`],
          cwd: clone,
          env,
          clearEnv: true,
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        const decoder = new TextDecoder();
        const read = async (
          stream: ReadableStream<Uint8Array>,
          seen: (text: string) => void = () => {},
        ) => {
          let text = "";
          for await (const chunk of stream) seen(text += decoder.decode(chunk));
          return text;
        };
        const [out, err] = [
          read(watcher.stdout, (text) => watcherText = text),
          read(watcher.stderr),
        ];
        watcherOut = Promise.all([out, err]).then(([stdout, stderr]) => ({
          stdout,
          stderr,
        }));
        // As a person would: write once the other terminal says it watches
        // (a message sent before that is not "new" to it).
        await waitFor(
          () => watcherText.includes("watching "),
          60_000,
          "the watch to start",
        );
        continue;
      }
      if (command.includes("MESSAGE_ID")) {
        assert.ok(
          messageId,
          "no message id seen before\n" + outputs.join("\n"),
        );
        command = command.replace("MESSAGE_ID", messageId);
      }
      const result = await run("bash", ["-c", command], { cwd: clone, env });
      outputs.push(`$ ${command}\n${result.stdout}${result.stderr}`);
      assert.equal(
        result.code,
        0,
        `${command}\n${result.stdout}\n${result.stderr}`,
      );
      if (/--profile bob inbox/.test(command)) {
        messageId = result.stdout.match(/\b([0-9a-f]{24})\b/)?.[1] ?? "";
      }
    }
    const all = outputs.join("\n");
    assert.match(all, /logged in as the admin "admin"/);
    assert.match(all, /encrypted end to end/);
    assert.match(all, /to team@example\.org/); // the Sent list shows recipients
    assert.match(all, /Lunch\?/);
    assert.match(
      all,
      /menu\.txt .* -> .*amtp-saved\/menu\.txt \(checksum ok, decrypted\)/,
    );
    assert.doesNotMatch(all, /\/\/menu/);
    assert.match(all, /safety code of you and bob@example\.org/);
    assert.ok(watcher, "the walk-through has no watch");
    const watchedCode = (await watcher.status).code;
    const watched = await watcherOut!;
    assert.equal(watchedCode, 0, watched.stderr);
    assert.match(watched.stdout, /new: .*alice@example\.org/);
    watcher = undefined;

    // Nothing new in the repository: keys and sessions are in the home folder.
    const status = await git("status", "--porcelain", "--untracked-files=all");
    assert.equal(status.stdout, "", status.stdout);
    const ignored = await git("status", "--porcelain", "--ignored");
    assert.deepEqual(
      ignored.stdout.trim().split("\n").sort(),
      ["!! data/"],
      "only the data folder, ignored",
    );
    await Deno.stat(`${home}/.config/amtp/keys/alice.key`);
    await Deno.stat(`${home}/.config/amtp/profiles/bob/session.json`);
  } finally {
    try {
      watcher?.kill("SIGKILL");
      await watcher?.status;
    } catch { /* gone */ }
    await server?.stop();
    await Deno.remove(root, { recursive: true });
  }
});
