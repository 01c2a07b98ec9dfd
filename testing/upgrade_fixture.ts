/**
 * Write the data folder of this release for the upgrade test
 * (`tests/fixtures/data-<version>/`): a server run once with the domain
 * `example.org`, users `alice@` and `bob@` (logging in with the first
 * admin's key, `admin.key`) and one message from Alice to Bob. Made once per
 * release and committed; later servers must start on it and read it.
 *
 * ```
 * deno run -A --unstable-kv --unstable-net --unstable-worker-options testing/upgrade_fixture.ts
 * ```
 *
 * @module
 */

import { APP_VERSION } from "../shared/version.ts";
import { adminCaller, bootstrapKey, startTestServer } from "./helpers.ts";
import { mailSession } from "./mail.ts";

/** The first admin's key in the fixture (`admin.key` once copied). */
export const FIXTURE_KEY = "admin.key.fixture";

/** The fixture's message. */
export const FIXTURE_MESSAGE = {
  subject: "Written by the previous release",
  body: "If you can read this, the upgrade kept the mail.",
};

if (import.meta.main) {
  const dir = new URL(`../tests/fixtures/data-${APP_VERSION}`, import.meta.url)
    .pathname;
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  const t = await startTestServer({ AMTP_DATA: dir });
  const admin = await adminCaller(await t.connect(), dir);
  await admin("admin_add_domain", { domain: "example.org" });
  const key = await bootstrapKey(dir);
  for (const address of ["alice@example.org", "bob@example.org"]) {
    await admin("admin_add_user", {
      address,
      algorithm: key.algorithm,
      public_key: key.publicKey,
    });
  }
  const alice = await mailSession(await t.connect(), "alice@example.org", key);
  await alice.call("send", { to: ["bob@example.org"], ...FIXTURE_MESSAGE });
  await t.close();
  // What only a running server or this machine needs stays out.
  for (const path of ["tls", "listening.json"]) {
    await Deno.remove(`${dir}/${path}`, { recursive: true }).catch(() => {});
  }
  // A test key, committed under a name `.gitignore` lets through (`*.key`
  // keeps real keys out); the test renames it back.
  await Deno.rename(`${dir}/admin.key`, `${dir}/${FIXTURE_KEY}`);
  console.log(`fixture written to ${dir}`);
}
