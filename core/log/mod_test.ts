import assert from "node:assert/strict";
import { Logger } from "./mod.ts";

Deno.test("log: secrets are redacted whatever the call site passes", () => {
  const lines: string[] = [];
  const log = new Logger({ sink: (l) => lines.push(l), level: "debug" });
  log.info("login", {
    user_token: "abc123",
    verification_string: "s3cret",
    key: "k",
    account: "bob",
  });
  assert.equal(lines.length, 1);
  assert.ok(!lines[0].includes("abc123"));
  assert.ok(!lines[0].includes("s3cret"));
  assert.match(lines[0], /account=bob/);
  assert.match(lines[0], /user_token=\[redacted\]/);
});

Deno.test("log: levels filter and json format is one object per line", () => {
  const lines: string[] = [];
  const log = new Logger({
    sink: (l) => lines.push(l),
    level: "warn",
    format: "json",
  });
  log.info("hidden");
  log.warn("shown", { n: 1, text: "a b" });
  assert.equal(lines.length, 1);
  const parsed = JSON.parse(lines[0]);
  assert.equal(parsed.event, "shown");
  assert.equal(parsed.level, "warn");
  assert.equal(parsed.n, 1);
  const child = log.child({ session: "s1" });
  child.error("boom");
  assert.equal(JSON.parse(lines[1]).session, "s1");
});
