/**
 * End-to-end encryption in the CLI: the device's keys in a file beside the
 * CLI session (owner-only), choosing to encrypt when every recipient has a
 * key, and a trust-on-first-use store of correspondents' keys.
 *
 * @module
 */

import {
  type DeviceKeys,
  deviceRecord,
  devicesOf,
  generateDeviceKeys,
  type PublishedDevice,
  type TrustStore,
} from "./e2e.ts";
import type { AmtpClient } from "./mod.ts";

function b64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

function unb64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** Where the CLI keeps a user's device keys. */
export function devicePath(stateFile: string, address: string): string {
  const dir = stateFile.replace(/[^/]*$/, "") || "./";
  return `${dir}device-${address}.json`;
}

/** Load this device's keys for `address`, if it has any. */
export async function loadDevice(
  stateFile: string,
  address: string,
): Promise<DeviceKeys | undefined> {
  try {
    const raw = JSON.parse(
      await Deno.readTextFile(devicePath(stateFile, address)),
    );
    return {
      label: raw.label,
      keyId: raw.keyId,
      encryptPrivate: unb64(raw.encryptPrivate),
      encryptPublic: unb64(raw.encryptPublic),
      signPrivate: unb64(raw.signPrivate),
      signPublic: unb64(raw.signPublic),
    };
  } catch {
    return undefined;
  }
}

/** Create this device's keys, publish them in the user's profile, save them. */
export async function initDevice(
  client: AmtpClient,
  options: { token: string; address: string; label: string; stateFile: string },
): Promise<DeviceKeys> {
  const keys = await generateDeviceKeys(options.label);
  const published = await client.call<{ key_id: string }>(
    "user_add_public_key",
    {
      user_token: options.token,
      ...deviceRecord(keys),
    },
  );
  keys.keyId = published.key_id;
  const path = devicePath(options.stateFile, options.address);
  await Deno.writeTextFile(
    path,
    JSON.stringify({
      label: keys.label,
      keyId: keys.keyId,
      encryptPrivate: b64(keys.encryptPrivate),
      encryptPublic: b64(keys.encryptPublic),
      signPrivate: b64(keys.signPrivate),
      signPublic: b64(keys.signPublic),
    }),
    { mode: 0o600 },
  );
  await Deno.chmod(path, 0o600).catch(() => {});
  return keys;
}

/** A user's published devices (local or through federation). */
export async function devicesFor(
  client: AmtpClient,
  token: string,
  address: string,
): Promise<PublishedDevice[]> {
  // Fresh: a cached profile could miss a device added a moment ago.
  const profile = await client.call<{ public_keys?: never[] }>(
    "user_userinfo",
    { user_token: token, address, fresh: true },
  );
  return devicesOf(profile);
}

/** Whether a message can go out encrypted, and to which devices; or why not. */
export type EncryptionPlan =
  | {
    encrypt: true;
    targets: { address: string; devices: PublishedDevice[] }[];
  }
  | { encrypt: false; reason: string };

/** Decide: encrypt when the sender has a device and every recipient publishes a key. */
export async function planEncryption(
  client: AmtpClient,
  options: {
    token: string;
    sender: string;
    device?: DeviceKeys;
    recipients: string[];
  },
): Promise<EncryptionPlan> {
  if (!options.device) {
    return {
      encrypt: false,
      reason: "this device has no encryption key (amtp device init)",
    };
  }
  const targets: { address: string; devices: PublishedDevice[] }[] = [];
  const missing: string[] = [];
  for (
    const address of [
      ...new Set(options.recipients.map((r) => r.toLowerCase())),
    ]
  ) {
    let devices: PublishedDevice[] = [];
    try {
      devices = await devicesFor(client, options.token, address);
    } catch {
      devices = [];
    }
    if (devices.length === 0) missing.push(address);
    else targets.push({ address, devices });
  }
  if (missing.length > 0) {
    return {
      encrypt: false,
      reason: `${missing.join(", ")} ${
        missing.length === 1 ? "has" : "have"
      } no published encryption key`,
    };
  }
  const own = await devicesFor(client, options.token, options.sender);
  if (!own.some((d) => d.key_id === options.device!.keyId)) {
    return {
      encrypt: false,
      reason: "this device's key is no longer published in your profile",
    };
  }
  targets.push({ address: options.sender, devices: own });
  return { encrypt: true, targets };
}

/** A trust store in a JSON file beside the CLI session. */
export class FileTrustStore implements TrustStore {
  readonly #path: string;

  /** Keep the store at `path`. */
  constructor(path: string) {
    this.#path = path;
  }

  async #read(): Promise<
    Record<string, { key: string; confirmed: boolean }[]>
  > {
    try {
      return JSON.parse(await Deno.readTextFile(this.#path));
    } catch {
      return {};
    }
  }

  /** Keys of an address. */
  async get(address: string): Promise<{ key: string; confirmed: boolean }[]> {
    return (await this.#read())[address] ?? [];
  }

  /** Remember keys. */
  async set(
    address: string,
    keys: { key: string; confirmed: boolean }[],
  ): Promise<void> {
    const all = await this.#read();
    all[address] = keys;
    await Deno.writeTextFile(this.#path, JSON.stringify(all, null, 2), {
      mode: 0o600,
    });
  }
}
