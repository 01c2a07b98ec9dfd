/**
 * The short kill test: SIGKILL of the sending server and of its federated
 * peer while clients send; every acknowledged message exactly once everywhere.
 */

import assert from "node:assert/strict";
import { soak } from "../bench/soak.ts";

Deno.test("kill: SIGKILLs of sender and peer lose and duplicate nothing acknowledged", async () => {
  const report = await soak({ seconds: 12, kills: 2, senders: 2 });
  assert.deepEqual(report.problems, []);
  assert.equal(report.senderKills, 2);
  assert.equal(report.peerKills, 2);
  assert.ok(
    report.acknowledged >= 5,
    `only ${report.acknowledged} messages acknowledged`,
  );
});
