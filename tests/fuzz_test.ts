/**
 * A bounded fuzz run against a live server process.
 */

import assert from "node:assert/strict";
import { fuzz } from "../testing/fuzz.ts";

Deno.test("fuzz: 20,000 hostile frames, answered with documented codes, server unharmed", async () => {
  const report = await fuzz({ frames: 20_000, seed: 42 });
  assert.deepEqual(report.problems, []);
  assert.ok(report.responses >= 20_000, `responses ${report.responses}`);
  assert.ok(report.closedSessions >= 1, "some sessions had a broken prefix");
  // Every kind of refusal shows up.
  for (const code of [1, 3, 4, 5]) {
    assert.ok(
      (report.codes[code] ?? 0) > 0,
      `code ${code}: ${JSON.stringify(report.codes)}`,
    );
  }
});
