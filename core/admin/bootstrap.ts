/**
 * The first admin. On a server with no admin, the first start creates the
 * admin `admin` with a fresh key pair of the default login algorithm (Ed25519)
 * and writes the private key to the data folder (readable by its owner only),
 * so a newcomer can log in at once.
 *
 * @module
 */

import type { AccountStore } from "../../kv/mod.ts";
import {
  DEFAULT_LOGIN_ALGORITHM,
  generateLoginKeyPair,
  makeKeyRecord,
} from "../auth/mod.ts";
import { toPem } from "../../shared/pem.ts";

/** Result of {@link ensureFirstAdmin}. */
export interface Bootstrap {
  /** Admin name created, if one was. */
  created?: string;
  /** Where its private key was written. */
  keyFile?: string;
}

/** Create the first admin when there is none. */
export async function ensureFirstAdmin(
  accounts: AccountStore,
  dataDir: string,
): Promise<Bootstrap> {
  if ((await accounts.countAdmins()) > 0) return {};
  const pair = await generateLoginKeyPair(DEFAULT_LOGIN_ALGORITHM);
  const key = await makeKeyRecord(pair.algorithm, pair.publicKey, "bootstrap");
  const now = new Date();
  const result = await accounts.addAdmin({
    name: "admin",
    keys: [key],
    disabled: false,
    created: now,
    updated: now,
  });
  if (result !== "ok") return {};
  await Deno.mkdir(dataDir, { recursive: true });
  const keyFile = `${dataDir}/admin.key`;
  await Deno.writeTextFile(keyFile, toPem("PRIVATE KEY", pair.privateKey), {
    mode: 0o600,
  });
  await Deno.chmod(keyFile, 0o600).catch(() => {});
  await Deno.writeTextFile(
    `${dataDir}/admin.pub`,
    toPem("PUBLIC KEY", pair.publicKey),
  );
  return { created: "admin", keyFile };
}
