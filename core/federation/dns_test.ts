import assert from "node:assert/strict";
import { parseDkim, parseServers } from "./dns.ts";

Deno.test("dns: amtp-servers records in priority order, default port 443", () => {
  assert.deepEqual(
    parseServers(
      "amtp1.domain.tld,amtp2.domain.tld:12345,123.123.123.123:23456",
    ),
    [
      { host: "amtp1.domain.tld", port: 443 },
      { host: "amtp2.domain.tld", port: 12345 },
      { host: "123.123.123.123", port: 23456 },
    ],
  );
  assert.deepEqual(
    parseServers(" [2001:db8::1]:4433 , [::1] ,bad host!, x.test:99999"),
    [
      { host: "2001:db8::1", port: 4433 },
      { host: "::1", port: 443 },
    ],
  );
});

Deno.test("dns: amtp-dkim records for Ed25519 and RSA", () => {
  const ed = parseDkim(
    "v=DKIM1; h=sha256; k=ed25519; p=" +
      btoa(String.fromCharCode(...new Uint8Array(32).fill(7))),
  );
  assert.equal(ed?.algorithm, "ed25519");
  assert.equal(ed?.key.length, 32);
  assert.equal(parseDkim("v=DKIM1;h=sha256;k=rsa;p=AAAA")?.algorithm, "rsa");
  assert.equal(parseDkim("v=DKIM1;k=dsa;p=AAAA"), undefined);
  assert.equal(parseDkim("v=DKIM2;k=rsa;p=AAAA"), undefined);
  assert.equal(parseDkim("v=DKIM1;k=ed25519;p="), undefined);
});
