/**
 * The server's log against a hostile module: what a module logs cannot forge
 * a line, a field of the server's, or the name of the module.
 */

import assert from "node:assert/strict";
import {
  adminCaller,
  login,
  startTestServer,
  userMaker,
} from "../testing/helpers.ts";

const FIXTURES = new URL("./fixtures/modules", import.meta.url).pathname;

/** One logfmt line as the server writes it, or null when it is not one. */
function parseLine(line: string): Map<string, string>[] | null {
  const fields: Map<string, string>[] = [];
  const field = /([A-Za-z0-9_.-]+)=(?:"((?:[^"\\]|\\.)*)"|([^\s"=]+))(?: |$)/y;
  while (field.lastIndex < line.length) {
    const m = field.exec(line);
    if (!m) return null;
    fields.push(
      new Map([[m[1], m[2] !== undefined ? JSON.parse(`"${m[2]}"`) : m[3]]]),
    );
  }
  return fields;
}

Deno.test("log: a module's fields cannot forge a line or override module=", async () => {
  const t = await startTestServer({ AMTP_MODULES: FIXTURES });
  try {
    const admin = await adminCaller(await t.connect(), t.dataDir);
    await admin("admin_add_domain", { domain: "example.org" });
    const key = await userMaker(admin)("m@example.org");
    const client = await t.connect();
    const token = await login(client, "user", "m@example.org", key);
    const forged = "level=error event=forged module=core";
    const response = await client.request("log", {
      module: "logger",
      user_token: token,
      event: `x\n${forged}`,
      fields: {
        module: "core",
        version: "0.0.0",
        level: "error",
        x: `a\n${forged}`,
        y: `b\r${forged}`,
        z: `c\u2028${forged}`,
        w: `d\u0085${forged}`,
        q: `e" ${forged}`,
        [`n\n${forged}`]: "1",
      },
    });
    assert.equal(response.error, 0, response.message);
    const text = t.logs.join("\n");
    const physical = text.split(/\r\n|[\n\r\u0085\u2028\u2029]/);
    const lines = physical.map((line) => ({ line, fields: parseLine(line) }));
    for (const { line, fields } of lines) {
      assert.ok(fields, `not one logfmt line: ${JSON.stringify(line)}`);
      assert.ok(line.startsWith("time="), `a line of its own: ${line}`);
    }
    const events = lines.map(({ fields }) =>
      fields!.find((f) => f.has("event"))?.get("event")
    );
    assert.ok(!events.includes("forged"), "no forged event line");
    const own = lines.filter(({ fields }) =>
      fields!.some((f) => f.get("event")?.startsWith("module_x"))
    );
    assert.equal(own.length, 1, "the module's line is there once");
    const named = (name: string) =>
      own[0].fields!.filter((f) => f.has(name)).map((f) => f.get(name));
    assert.deepEqual(named("module"), ["logger"]);
    assert.deepEqual(named("version"), ["1.0.0"]);
    assert.deepEqual(named("level"), ["info"]);
    assert.deepEqual(named("_module"), ["core"]);
    assert.deepEqual(named("x"), [`a\n${forged}`]);
  } finally {
    await t.close();
  }
});
