import assert from "node:assert/strict";
import { parseDkim } from "./dns.ts";
import { ServerKeys, verifyWith } from "./keys.ts";

for (const algorithm of ["ed25519", "rsa"] as const) {
  Deno.test(`server keys (${algorithm}): sign, publish, verify; rotation overlaps`, async () => {
    const dir = await Deno.makeTempDir({ prefix: "amtp-keys-" });
    try {
      const keys = await ServerKeys.open(dir, algorithm);
      assert.equal(
        (await Deno.stat(`${dir}/server_key.json`)).mode! & 0o077,
        0,
      );
      const data = new TextEncoder().encode("hello");
      const signature = await keys.sign(data);
      const published = parseDkim(keys.records()[0])!;
      assert.equal(published.algorithm, algorithm);
      assert.ok(await verifyWith(published, data, signature));
      assert.ok(
        !(await verifyWith(
          published,
          new TextEncoder().encode("hellO"),
          signature,
        )),
      );
      // Rotation: both keys published; after activation the new one signs.
      await keys.rotate();
      assert.equal(keys.records().length, 2);
      await keys.activate();
      const again = await ServerKeys.open(dir);
      const fresh = await again.sign(data);
      assert.ok(!(await verifyWith(published, data, fresh)));
      assert.ok(await verifyWith(parseDkim(again.records()[0])!, data, fresh));
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
