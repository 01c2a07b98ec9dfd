import assert from "node:assert/strict";
import { ConfigError, loadConfig, VARIABLES } from "./mod.ts";

Deno.test("config: defaults need no variable at all", () => {
  const config = loadConfig({});
  assert.equal(config.port, 4433);
  assert.equal(config.host, "0.0.0.0");
  assert.equal(config.dataDir, "./data");
  assert.equal(config.kvPath, "./data/amtp.kv");
  assert.equal(config.hostname, "localhost");
  assert.equal(config.maxFrame, 1048576);
});

Deno.test("config: every invalid value is reported by its variable's name", () => {
  const cases: [Record<string, string>, string][] = [
    [{ AMTP_PORT: "abc" }, "AMTP_PORT"],
    [{ AMTP_PORT: "70000" }, "AMTP_PORT"],
    [{ AMTP_MAX_FRAME: "10" }, "AMTP_MAX_FRAME"],
    [{ AMTP_LOG_LEVEL: "loud" }, "AMTP_LOG_LEVEL"],
    [{ AMTP_LOG_FORMAT: "xml" }, "AMTP_LOG_FORMAT"],
    [{ AMTP_HOSTNAME: "bad host" }, "AMTP_HOSTNAME"],
    [{ AMTP_HOST: "not a host!" }, "AMTP_HOST"],
    [{ AMTP_CERT: "/x.pem" }, "AMTP_KEY"],
    [{ AMTP_KEY: "/x.pem" }, "AMTP_CERT"],
    [{ AMTP_IDLE_TIMEOUT: "-1" }, "AMTP_IDLE_TIMEOUT"],
  ];
  for (const [env, name] of cases) {
    assert.throws(() => loadConfig(env), (error: unknown) => {
      assert.ok(error instanceof ConfigError, `${name}: ${error}`);
      assert.equal(error.variable, name);
      assert.match(error.message, new RegExp(`^${name}: `));
      return true;
    });
  }
});

Deno.test("config: values are taken and the KV path follows the data folder", () => {
  const config = loadConfig({
    AMTP_PORT: "0",
    AMTP_DATA: "/srv/amtp",
    AMTP_HOSTNAME: "Mail.Example.ORG",
  });
  assert.equal(config.port, 0);
  assert.equal(config.kvPath, "/srv/amtp/amtp.kv");
  assert.equal(config.hostname, "mail.example.org");
  assert.equal(
    loadConfig({ AMTP_KV: "https://kv.example/db" }).kvPath,
    "https://kv.example/db",
  );
});

Deno.test("config: every variable is described", () => {
  for (const spec of VARIABLES) {
    assert.match(spec.name, /^AMTP_[A-Z_]+$/);
    assert.ok(spec.description.length > 3);
  }
});
