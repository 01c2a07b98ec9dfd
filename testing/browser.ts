/**
 * What the browser tests need: Debian's Chromium and playwright-core (an
 * npm package kept in tests/browser/, installed by `npm ci` there), and a
 * way to run one of this folder's node scripts.
 *
 * @module
 */

/** The Chromium the tests drive. */
export const CHROMIUM = Deno.env.get("CHROMIUM") ?? "/usr/bin/chromium";

/** The folder of the node scripts (tests/browser/). */
export const BROWSER_DIR =
  new URL("../tests/browser/", import.meta.url).pathname;

/** Fail with a hint when Chromium is missing; install playwright-core when it is. */
export async function ensureBrowserTools(): Promise<void> {
  try {
    await Deno.stat(CHROMIUM);
  } catch {
    throw new Error(
      `this test needs Chromium at ${CHROMIUM} (Debian: apt-get install chromium); .ci/run installs it`,
    );
  }
  try {
    await Deno.stat(`${BROWSER_DIR}node_modules/playwright-core`);
  } catch {
    const npm = await new Deno.Command("npm", {
      args: ["ci", "--no-audit", "--no-fund"],
      cwd: BROWSER_DIR,
      stdout: "null",
      stderr: "piped",
    }).output();
    if (!npm.success) {
      throw new Error(
        `npm ci in tests/browser failed: ${
          new TextDecoder().decode(npm.stderr)
        }`,
      );
    }
  }
}

/** Run `node SCRIPT ...args` in this folder; its standard output (fails on a non-zero exit). */
export async function nodeScript(
  script: string,
  args: string[],
  env: Record<string, string> = {},
): Promise<string> {
  const run = await new Deno.Command("node", {
    args: [`${BROWSER_DIR}${script}`, ...args],
    cwd: BROWSER_DIR,
    env: { CHROMIUM, ...env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(run.stdout);
  if (run.code !== 0) {
    throw new Error(
      `node ${script} failed (${run.code}): ${out}\n${
        new TextDecoder().decode(run.stderr)
      }`,
    );
  }
  return out;
}
