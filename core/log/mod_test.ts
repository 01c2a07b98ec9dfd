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

/** Parse one logfmt line as the logger writes it; throws on anything else. */
function parseLine(line: string): [string, string][] {
  const out: [string, string][] = [];
  const field = /([A-Za-z0-9_.-]+)=(?:"((?:[^"\\]|\\.)*)"|([^\s"=]+))(?: |$)/y;
  while (field.lastIndex < line.length) {
    const m = field.exec(line);
    if (!m) throw new Error(`not a logfmt line at ${field.lastIndex}: ${line}`);
    out.push([m[1], m[2] !== undefined ? JSON.parse(`"${m[2]}"`) : m[3]]);
  }
  return out;
}

Deno.test("log: no value, name or event can start a line, end its quotes or replace a field", () => {
  const lines: string[] = [];
  const log = new Logger({ sink: (l) => lines.push(l), level: "debug" })
    .child({ module: "mail", version: "1.0.0" });
  const hostile = [
    "a\nlevel=error event=forged",
    'x" level=error event=forged module=core',
    "a\r\ntime=0 level=error",
    "back\\slash\\",
    "nel\u0085line\u2028sep\u2029end",
    "del\u007f bell\u0007 nul\u0000",
    "lone \ud800 surrogate \udc00",
    "",
    "k=v",
  ];
  const fields: Record<string, string> = {
    module: "core",
    version: "9.9.9",
    time: "1970",
    level: "error",
    event: "forged",
    "x\ny=1": "name",
    "a b=c": "spaces",
    "__proto__": "proto",
  };
  hostile.forEach((h, i) => fields[`v${i}`] = h);
  log.info("ev\nlevel=error", fields);
  log.info("plain", { n: 1 });
  assert.equal(lines.length, 2, "one line per call");
  for (const line of lines) {
    assert.ok(!/[\n\r\u0085\u2028\u2029]/.test(line), line);
  }
  const parsed = parseLine(lines[0]);
  const first = new Map<string, string>();
  for (const [name, value] of parsed) {
    assert.ok(!first.has(name), `field ${name} written twice`);
    first.set(name, value);
  }
  assert.deepEqual(parsed.slice(0, 5).map(([n]) => n), [
    "time",
    "level",
    "event",
    "module",
    "version",
  ]);
  assert.equal(first.get("level"), "info");
  assert.equal(first.get("event"), "ev_level_error");
  assert.equal(first.get("module"), "mail");
  assert.equal(first.get("version"), "1.0.0");
  assert.equal(first.get("_module"), "core");
  assert.equal(first.get("_level"), "error");
  assert.equal(first.get("x_y_1"), "name");
  assert.equal(first.get("a_b_c"), "spaces");
  // Every hostile value comes back exactly (lone surrogates as U+FFFD-free escapes).
  hostile.forEach((h, i) => {
    if (!/[\ud800-\udfff]/.test(h)) assert.equal(first.get(`v${i}`), h);
  });
  assert.equal(parseLine(lines[1]).find(([n]) => n === "n")?.[1], "1");
});

Deno.test("log: json lines keep the logger's fields and escape line separators", () => {
  const lines: string[] = [];
  const log = new Logger({ sink: (l) => lines.push(l), format: "json" })
    .child({ module: "mail" });
  log.warn("ev", {
    module: "core",
    level: "error",
    x: "a\u2028b\u0085c\nd",
    n: 2,
    big: "y".repeat(10_000),
    obj: { a: 1 } as unknown as string,
  });
  assert.equal(lines.length, 1);
  assert.ok(!/[\n\u0085\u2028]/.test(lines[0]));
  const parsed = JSON.parse(lines[0]);
  assert.equal(parsed.module, "mail");
  assert.equal(parsed._module, "core");
  assert.equal(parsed.level, "warn");
  assert.equal(parsed._level, "error");
  assert.equal(parsed.x, "a\u2028b\u0085c\nd");
  assert.equal(parsed.n, 2);
  assert.ok(parsed.big.length <= 2049);
  assert.equal(parsed.obj, '{"a":1}');
});
