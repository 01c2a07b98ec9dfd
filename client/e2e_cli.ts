/**
 * End-to-end encryption in the CLI: the device's keys (and the account's
 * master key, on the devices that hold it) in a file beside the CLI session
 * (owner-only), and the contacts' pinned master keys in another. The device
 * list life cycle and the decision whether a message may go out encrypted
 * are every client's (`e2e_account.ts`, re-exported here).
 *
 * @module
 */

import {
  b64,
  type ContactRecord,
  deviceId,
  pkcs8Of,
  type TrustStore,
  unb64,
} from "./e2e.ts";
import {
  type AccountDevice,
  initDevice as initAccountDevice,
  type InitResult,
} from "./e2e_account.ts";
import type { AmtpClient } from "./mod.ts";

export {
  approveDevice,
  type EncryptionPlan,
  type InitResult,
  keysOf,
  planEncryption,
  revokeDevice,
} from "./e2e_account.ts";

/** This device's keys as the CLI keeps them (PKCS#8 bytes, in a file). */
export type DeviceFile = AccountDevice;

/** Where the CLI keeps a user's device keys. */
export function devicePath(stateFile: string, address: string): string {
  const dir = stateFile.replace(/[^/]*$/, "") || "./";
  return `${dir}device-${address}.json`;
}

async function writePrivate(path: string, data: string): Promise<void> {
  // Deno applies `mode` to an existing file too.
  await Deno.writeTextFile(path, data, { mode: 0o600 });
}

/** Load this device's keys for `address`, if it has any. */
export async function loadDevice(
  stateFile: string,
  address: string,
): Promise<DeviceFile | undefined> {
  let raw;
  try {
    raw = JSON.parse(await Deno.readTextFile(devicePath(stateFile, address)));
  } catch {
    return undefined;
  }
  const encryptPublic = unb64(raw.encryptPublic);
  const signPublic = unb64(raw.signPublic);
  return {
    address,
    device: {
      label: raw.label,
      id: raw.id ?? await deviceId(encryptPublic, signPublic),
      encryptPrivate: unb64(raw.encryptPrivate),
      encryptPublic,
      signPrivate: unb64(raw.signPrivate),
      signPublic,
    },
    master: raw.masterPrivate
      ? { private: unb64(raw.masterPrivate), public: unb64(raw.masterPublic) }
      : undefined,
    legacyKeyId: raw.id ? raw.legacyKeyId : raw.keyId,
  };
}

/** Save this device's keys (owner-only). */
export async function saveDevice(
  stateFile: string,
  file: DeviceFile,
): Promise<void> {
  const d = file.device;
  await writePrivate(
    devicePath(stateFile, file.address),
    JSON.stringify({
      label: d.label,
      id: d.id,
      encryptPrivate: b64(pkcs8Of(d.encryptPrivate)),
      encryptPublic: b64(d.encryptPublic),
      signPrivate: b64(pkcs8Of(d.signPrivate)),
      signPublic: b64(d.signPublic),
      masterPrivate: file.master
        ? b64(pkcs8Of(file.master.private))
        : undefined,
      masterPublic: file.master ? b64(file.master.public) : undefined,
      legacyKeyId: file.legacyKeyId,
    }),
  );
}

/**
 * Set up this device (see `initDevice` of e2e_account.ts), its keys saved in
 * the file beside the CLI session `stateFile`.
 */
export function initDevice(
  client: AmtpClient,
  options: {
    token: string;
    address: string;
    label: string;
    stateFile: string;
    newMaster?: boolean;
  },
): Promise<InitResult> {
  return initAccountDevice(client, {
    ...options,
    save: (file) => saveDevice(options.stateFile, file),
  });
}

/** Contacts and seen message ids in a JSON file beside the CLI session (owner-only). */
export class FileTrustStore implements TrustStore {
  readonly #path: string;

  /** Keep the store at `path`. */
  constructor(path: string) {
    this.#path = path;
  }

  async #read(): Promise<{
    contacts: Record<string, ContactRecord>;
    seen: Record<string, string>;
  }> {
    try {
      const raw = JSON.parse(await Deno.readTextFile(this.#path));
      // Version 1 files (per-device keys) hold nothing version 2 can use.
      if (raw && raw.v === 2) return raw;
    } catch {
      // No file yet.
    }
    return { contacts: {}, seen: {} };
  }

  async #write(data: {
    contacts: Record<string, ContactRecord>;
    seen: Record<string, string>;
  }): Promise<void> {
    const seen = Object.entries(data.seen);
    // The newest 10,000 ids are enough to catch a replay.
    const kept = Object.fromEntries(seen.slice(-10_000));
    await writePrivate(
      this.#path,
      JSON.stringify({ v: 2, contacts: data.contacts, seen: kept }, null, 2),
    );
  }

  /** The record of an address. */
  async get(address: string): Promise<ContactRecord | undefined> {
    return (await this.#read()).contacts[address];
  }

  /** Replace a record. */
  async set(address: string, record: ContactRecord): Promise<void> {
    const data = await this.#read();
    data.contacts[address] = record;
    await this.#write(data);
  }

  /** Remember a message id as seen in a copy; answers the first copy. */
  async seen(sender: string, messageId: string, copy: string): Promise<string> {
    const data = await this.#read();
    const key = `${sender}\n${messageId}`;
    if (!data.seen[key]) {
      data.seen[key] = copy;
      await this.#write(data);
    }
    return data.seen[key];
  }
}
