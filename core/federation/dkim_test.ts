import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { authenticate } from "mailauth";
import { DkimKeys, type DkimRecord } from "./dkim.ts";

/** mailauth's DNS, answered from the records a domain publishes. */
function publishedOnly(records: DkimRecord[]) {
  return (name: string, type: string) => {
    const found = records.filter((r) => r.name === name);
    if (type !== "TXT" || found.length === 0) {
      return Promise.reject(
        Object.assign(new Error("no record"), { code: "ENOTFOUND" }),
      );
    }
    return Promise.resolve(found.map((r) => [r.value]));
  };
}

async function verify(raw: Uint8Array, records: DkimRecord[]) {
  const result = await authenticate(Buffer.from(raw), {
    ip: "192.0.2.1",
    helo: "mx.example.test",
    sender: "a@example.test",
    mta: "mx.test",
    resolver: publishedOnly(records) as never,
    disableArc: true,
    disableBimi: true,
  });
  return result.dkim.results.map((r) => r.status?.result);
}

Deno.test("dkim: each domain gets an Ed25519 and an RSA key; both sign; a rotation publishes first, then signs", async () => {
  const dir = await Deno.makeTempDir();
  const kv = await Deno.openKv(`${dir}/kv`);
  try {
    const keys = new DkimKeys(kv);
    const raw = new TextEncoder().encode(
      "From: a@example.test\r\nTo: b@other.test\r\nSubject: hi\r\n\r\nhello\r\n",
    );
    const first = await keys.records("Example.TEST");
    assert.deepStrictEqual(first.map((r) => r.state), ["active", "active"]);
    assert.match(first[0].value, /^v=DKIM1; k=ed25519; p=/);
    assert.match(first[1].value, /^v=DKIM1; k=rsa; p=/);
    assert.deepStrictEqual(
      await verify(await keys.sign("example.test", raw), first),
      ["pass", "pass"],
    );
    // Another instance (the server after a restart) signs with the same keys.
    assert.deepStrictEqual(
      await verify(await new DkimKeys(kv).sign("example.test", raw), first),
      ["pass", "pass"],
    );
    const pending = await keys.rotate("example.test");
    assert.deepStrictEqual(pending.map((r) => r.state), ["pending", "pending"]);
    // Until activated the old keys sign.
    assert.deepStrictEqual(
      await verify(await keys.sign("example.test", raw), first),
      ["pass", "pass"],
    );
    await keys.activate("example.test");
    const signed = await keys.sign("example.test", raw);
    assert.deepStrictEqual(await verify(signed, pending), ["pass", "pass"]);
    // Not with the old records alone: the selectors changed.
    assert.notDeepStrictEqual(await verify(signed, first), ["pass", "pass"]);
    await assert.rejects(() => keys.activate("example.test"), /rotate first/);
  } finally {
    kv.close();
    await Deno.remove(dir, { recursive: true });
  }
});
