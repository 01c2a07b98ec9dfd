/**
 * The short kill test: SIGKILL of the sending server and of its federated
 * peer while clients send; every acknowledged message exactly once everywhere.
 */

import assert from "node:assert/strict";
import { soak } from "../testing/soak.ts";

Deno.test("kill: SIGKILLs of sender and peer lose and duplicate nothing acknowledged", async () => {
  // Four kills of each: a delivery in flight when the peer dies is likely
  // (the sender must notice the dead connection and deliver again in time).
  const report = await soak({ seconds: 12, kills: 4, senders: 2 });
  assert.deepEqual(report.problems, []);
  assert.equal(report.senderKills, 4);
  assert.equal(report.peerKills, 4);
  assert.ok(
    report.acknowledged >= 5,
    `only ${report.acknowledged} messages acknowledged`,
  );
});
