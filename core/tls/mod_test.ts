import assert from "node:assert/strict";
import { Logger } from "../log/mod.ts";
import { loadCertificate, RENEW_BEFORE_DAYS } from "./mod.ts";

const log = new Logger({ sink: () => {} });

Deno.test("tls: a generated certificate is kept, then renewed before it expires", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "amtp-tls-" });
  try {
    const source = { dataDir, names: ["localhost", "127.0.0.1"] };
    const first = await loadCertificate(source, log);
    assert.ok(first.selfSigned);
    assert.equal((await Deno.stat(`${dataDir}/tls/key.pem`)).mode! & 0o077, 0);
    const again = await loadCertificate(source, log);
    assert.equal(again.sha256, first.sha256);
    // Pretend it expires within the renewal margin.
    const metaPath = `${dataDir}/tls/cert.json`;
    const meta = JSON.parse(await Deno.readTextFile(metaPath));
    meta.notAfter = new Date(Date.now() + (RENEW_BEFORE_DAYS - 1) * 86_400_000)
      .toISOString();
    await Deno.writeTextFile(metaPath, JSON.stringify(meta));
    const renewed = await loadCertificate(source, log);
    assert.notEqual(renewed.sha256, first.sha256);
    assert.ok(renewed.notAfter!.getTime() - Date.now() > 12 * 86_400_000);
    // A changed host name gets a certificate for the new name.
    const renamed = await loadCertificate({
      dataDir,
      names: ["mail.example.org"],
    }, log);
    assert.notEqual(renamed.sha256, renewed.sha256);
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});
