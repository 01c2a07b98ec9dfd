import assert from "node:assert/strict";
import { handledCommands, ManifestError, parseManifest } from "./manifest.ts";

Deno.test("manifest: defaults, resolved paths, refusals", () => {
  const m = parseManifest({
    name: "notes",
    version: "1.2.0",
    commands: ["note_get"],
    permissions: { read: ["./assets"], import: ["esm.sh", "cdn.example:8443"] },
  }, "/srv/modules/notes/1.2.0");
  assert.equal(m.entry, "file:///srv/modules/notes/1.2.0/mod.ts");
  assert.deepEqual(m.permissions, {
    net: [],
    read: ["/srv/modules/notes/1.2.0/assets"],
    write: [],
    env: [],
    import: ["esm.sh", "cdn.example:8443"],
  });
  assert.equal(m.isolation, "worker");
  assert.equal(m.timeoutMs, 5000);
  const bad: Record<string, unknown>[] = [
    { name: "Bad Name", version: "1.0.0", commands: ["a"] },
    { name: "ok", version: "1.0", commands: ["a"] },
    { name: "ok", version: "1.0.0", commands: [] },
    { name: "ok", version: "1.0.0", commands: ["a"], entry: "../escape.ts" },
    { name: "ok", version: "1.0.0", commands: ["a"], isolation: "vm" },
    {
      name: "ok",
      version: "1.0.0",
      commands: ["a"],
      permissions: { net: "everything" },
    },
    { name: "ok", version: "1.0.0", commands: ["a"], timeout_ms: 0 },
    ...["https://esm.sh", "esm.sh/x", "*", "", "a..b"].map((host) => ({
      name: "ok",
      version: "1.0.0",
      commands: ["a"],
      permissions: { import: [host] },
    })),
  ];
  for (const raw of bad) {
    assert.throws(
      () => parseManifest(raw, "/m"),
      ManifestError,
      JSON.stringify(raw),
    );
  }
});

Deno.test("manifest: calls, exports and subscribes between modules", () => {
  const m = parseManifest({
    name: "rules",
    version: "1.0.0",
    commands: ["rules_get"],
    exports: ["rules_evaluate", "rules_get"],
    calls: { messages: ["message_facts"] },
    subscribes: { messages: ["message_delivered"] },
  }, "/m");
  assert.deepEqual(m.calls, { messages: ["message_facts"] });
  assert.deepEqual(m.subscribes, { messages: ["message_delivered"] });
  // Handlers: the commands, then the exports not among them.
  assert.deepEqual(handledCommands(m), ["rules_get", "rules_evaluate"]);
  const base = { name: "ok", version: "1.0.0", commands: ["a"] };
  for (
    const extra of [
      { calls: ["messages"] },
      { calls: { Messages: ["get"] } },
      { calls: { messages: "get" } },
      { calls: { messages: ["Get"] } },
      { exports: ["no spaces"] },
      { subscribes: { messages: [1] } },
      { events: ["Has-Dash"] },
    ]
  ) {
    assert.throws(
      () => parseManifest({ ...base, ...extra }, "/m"),
      ManifestError,
      JSON.stringify(extra),
    );
  }
});
