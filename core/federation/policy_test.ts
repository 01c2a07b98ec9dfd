import assert from "node:assert/strict";
import {
  allowsHost,
  allowsKey,
  allowsServer,
  parsePolicy,
  parsePolicyRecord,
  policyDocument,
  PolicyError,
  policyId,
} from "./policy.ts";

const KEY = "ed25519:" +
  btoa(String.fromCharCode(...new Uint8Array(32).fill(7)));

Deno.test("policy records: version, id and port are read; anything else is not a record", () => {
  assert.deepEqual(parsePolicyRecord("v=AMTP-POLICY1; id=abc123"), {
    id: "abc123",
    port: 443,
  });
  assert.deepEqual(parsePolicyRecord("v=AMTP-POLICY1;id=X9;port=8443"), {
    id: "X9",
    port: 8443,
  });
  for (
    const bad of [
      "v=STSv1; id=abc",
      "v=AMTP-POLICY1",
      "v=AMTP-POLICY1; id=has space",
      "v=AMTP-POLICY1; id=" + "a".repeat(33),
      "v=AMTP-POLICY1; id=a; port=0",
      "v=AMTP-POLICY1; id=a; port=70000",
    ]
  ) {
    assert.equal(parsePolicyRecord(bad), undefined, bad);
  }
});

Deno.test("policy documents: a served policy parses back; broken ones are refused with a reason", async () => {
  const text = policyDocument({
    mode: "enforce",
    servers: ["amtp1.example.org", "amtp2.example.org:4433"],
    keys: [KEY],
    max_age: 86400,
  });
  const policy = parsePolicy(text);
  assert.equal(policy.mode, "enforce");
  assert.ok(allowsServer(policy, { host: "amtp1.example.org", port: 443 }));
  assert.ok(allowsServer(policy, { host: "amtp2.example.org", port: 4433 }));
  assert.ok(!allowsServer(policy, { host: "amtp2.example.org", port: 443 }));
  assert.ok(allowsHost(policy, "amtp2.example.org"));
  assert.ok(!allowsHost(policy, "evil.example.org"));
  assert.ok(
    allowsKey(policy, {
      algorithm: "ed25519",
      key: new Uint8Array(32).fill(7),
    }),
  );
  assert.ok(
    !allowsKey(policy, {
      algorithm: "ed25519",
      key: new Uint8Array(32).fill(8),
    }),
  );
  assert.match(await policyId(text), /^[0-9a-f]{16}$/);
  assert.equal(await policyId(text), await policyId(text));
  // A year at most, whatever it asks for.
  assert.equal(
    parsePolicy(text.replace('"max_age": 86400', '"max_age": 99999999'))
      .max_age,
    31_557_600,
  );
  for (
    const [bad, reason] of [
      ["not json", /not JSON/],
      [text.replace("AMTP-POLICY1", "AMTP-POLICY9"), /version/],
      [text.replace('"enforce"', '"strict"'), /mode/],
      [text.replace(/"servers": \[[^\]]*\]/, '"servers": []'), /servers/],
      [text.replace(/"keys": \[[^\]]*\]/, '"keys": ["dsa:AAAA"]'), /key/],
      [text.replace('"max_age": 86400', '"max_age": -1'), /max_age/],
    ] as const
  ) {
    assert.throws(() => parsePolicy(bad), (error: unknown) => {
      assert.ok(error instanceof PolicyError);
      assert.match(error.message, reason);
      return true;
    });
  }
});
