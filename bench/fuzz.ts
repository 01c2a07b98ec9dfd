/**
 * `deno task fuzz [--frames N] [--seed S]`: fuzz a live server with hostile
 * frames (testing/fuzz.ts); a bounded run is part of the tests.
 *
 * @module
 */

import { fuzz } from "../testing/fuzz.ts";

const arg = (name: string, fallback: number) => {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
};
const report = await fuzz({
  frames: arg("frames", 200_000),
  seed: arg("seed", Date.now() % 100000),
});
console.log(JSON.stringify(report, null, 2));
console.log(
  report.problems.length === 0
    ? "fuzz ok"
    : `fuzz FAILED: ${report.problems.length} problems`,
);
Deno.exit(report.problems.length === 0 ? 0 : 1);
