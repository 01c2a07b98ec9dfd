import assert from "node:assert/strict";
import { Progress } from "./progress.ts";

Deno.test("progress: a bar redrawn per percent, a newline at the end, none for small transfers", () => {
  const out: string[] = [];
  const bar = new Progress("up big.bin", 4 * 1024 * 1024, (t) => out.push(t));
  bar.update(0);
  bar.update(1000);
  bar.update(1024 * 1024);
  bar.update(4 * 1024 * 1024);
  assert.equal(out.length, 3);
  assert.match(out[1], /^\rup big\.bin \[#{8}\.{22}\] {2}25% 1\.0\/4\.0 MiB$/);
  assert.ok(out[2].endsWith("100% 4.0/4.0 MiB\n"));
  const small: string[] = [];
  new Progress("x", 1000, (t) => small.push(t)).update(1000);
  assert.deepEqual(small, []);
});
