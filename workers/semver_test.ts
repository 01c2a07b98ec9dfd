import assert from "node:assert/strict";
import {
  maxSatisfying,
  parseVersion,
  satisfies,
  SemverError,
} from "./semver.ts";

Deno.test("semver: ranges", () => {
  const v = parseVersion;
  const cases: [string, string, boolean][] = [
    ["1.2.3", "1.2.3", true],
    ["1.2.4", "1.2.3", false],
    ["1.9.0", "^1.2", true],
    ["2.0.0", "^1.2", false],
    ["0.2.5", "^0.2.1", true],
    ["0.3.0", "^0.2.1", false],
    ["1.2.9", "~1.2.3", true],
    ["1.3.0", "~1.2.3", false],
    ["1.7.1", "1", true],
    ["1.7.1", "1.x", true],
    ["2.0.0", "1.x", false],
    ["3.1.4", "*", true],
    ["1.5.0", ">=1.0.0 <2", true],
    ["2.0.0", ">=1.0.0 <2", false],
  ];
  for (const [version, range, expected] of cases) {
    assert.equal(satisfies(v(version), range), expected, `${version} ${range}`);
  }
  assert.equal(maxSatisfying(["1.0.0", "1.4.2", "2.0.0"], "^1"), "1.4.2");
  assert.equal(maxSatisfying(["1.0.0", "2.0.0"], "^3"), undefined);
  assert.throws(() => parseVersion("1.2"), SemverError);
  assert.throws(() => satisfies(v("1.0.0"), "^a.b"), SemverError);
});
