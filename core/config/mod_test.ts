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
  assert.equal(config.federationBatch, 1);
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
    [{ AMTP_FEDERATION_BATCH: "0" }, "AMTP_FEDERATION_BATCH"],
    [{ AMTP_FEDERATION_BATCH: "33" }, "AMTP_FEDERATION_BATCH"],
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

Deno.test("config: the email gateway's AMTP_SMTP_* settings are checked at start, each bad one named", async () => {
  const fails = (env: Record<string, string>, variable: string) =>
    assert.throws(
      () => loadConfig(env),
      (error) => error instanceof ConfigError && error.variable === variable,
      `${JSON.stringify(env)} should fail on ${variable}`,
    );
  fails({ AMTP_SMTP_PORT: "99999" }, "AMTP_SMTP_PORT");
  fails({ AMTP_SMTP_PORT: "25x" }, "AMTP_SMTP_PORT");
  fails({ AMTP_SMTP_HOST: "not a host" }, "AMTP_SMTP_HOST");
  fails({ AMTP_SMTP_REMOTE_PORT: "0" }, "AMTP_SMTP_REMOTE_PORT");
  fails({ AMTP_SMTP_MAX_SIZE: "100" }, "AMTP_SMTP_MAX_SIZE");
  fails({ AMTP_SMTP_MAX_SIZE: String(16 * 1024 * 1024) }, "AMTP_SMTP_MAX_SIZE");
  fails({ AMTP_SMTP_TIMEOUT: "1" }, "AMTP_SMTP_TIMEOUT");
  fails({ AMTP_SMTP_RATE: "0" }, "AMTP_SMTP_RATE");
  fails({ AMTP_SMTP_RELAY: "smtp.provider.example" }, "AMTP_SMTP_RELAY");
  fails({ AMTP_SMTP_RELAY: "smtp.provider.example:70000" }, "AMTP_SMTP_RELAY");
  fails({ AMTP_SMTP_RELAY_USER: "me" }, "AMTP_SMTP_RELAY_USER");
  fails(
    { AMTP_SMTP_RELAY: "relay.example:587", AMTP_SMTP_RELAY_USER: "me" },
    "AMTP_SMTP_RELAY_PASSWORD",
  );
  fails(
    {
      AMTP_SMTP_RELAY: "relay.example:587",
      AMTP_SMTP_RELAY_CA: "/nonexistent/ca.pem",
    },
    "AMTP_SMTP_RELAY_CA",
  );
  const notPem = await Deno.makeTempFile();
  await Deno.writeTextFile(notPem, "hello");
  fails(
    { AMTP_SMTP_RELAY: "relay.example:587", AMTP_SMTP_RELAY_CA: notPem },
    "AMTP_SMTP_RELAY_CA",
  );
  await Deno.remove(notPem);
  const ok = loadConfig({
    AMTP_SMTP_RELAY: "[::1]:587",
    AMTP_SMTP_RELAY_USER: "me",
    AMTP_SMTP_RELAY_PASSWORD: "secret",
    AMTP_SMTP_PORT: "25",
  }).smtp;
  assert.deepEqual(ok.relay, {
    host: "::1",
    port: 587,
    user: "me",
    caFile: undefined,
  });
  assert.equal(ok.port, 25);
  assert.equal(loadConfig({}).smtp.maxSize, 10 * 1024 * 1024);
});
