/**
 * `deno task soak [--seconds N] [--kills N]`: the kill test (testing/soak.ts);
 * a short run is part of the tests.
 *
 * @module
 */

import { soak } from "../testing/soak.ts";

const arg = (name: string, fallback: number) => {
  const i = Deno.args.indexOf(`--${name}`);
  return i >= 0 ? Number(Deno.args[i + 1]) : fallback;
};
const report = await soak({
  seconds: arg("seconds", 120),
  kills: arg("kills", 5),
  senders: arg("senders", 4),
});
console.log(JSON.stringify(report, null, 2));
console.log(
  report.problems.length === 0
    ? `soak ok: ${report.acknowledged} acknowledged messages, ${report.senderKills} sender and ${report.peerKills} peer SIGKILLs, each message exactly once everywhere`
    : `soak FAILED: ${report.problems.length} problems`,
);
Deno.exit(report.problems.length === 0 ? 0 : 1);
