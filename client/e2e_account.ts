/**
 * End-to-end encryption of an account, on any client (Deno and browsers):
 * its keys as its profile shows them, the device list life cycle (create,
 * approve, revoke) and the decision whether a message may go out encrypted
 * — or, failing closed, not at all. Where the keys are kept is the
 * caller's: a file beside the CLI session (`e2e_cli.ts`), IndexedDB in the
 * web app.
 *
 * @module
 */

import {
  type AccountKeys,
  accountKeys,
  b64,
  type ContactRecord,
  type DeviceKeys,
  type DeviceList,
  generateDeviceKeys,
  generateMasterKeys,
  judgeContact,
  type KeyOptions,
  type KeyTrust,
  listed,
  type MasterKeys,
  pendingRecord,
  type ProfileKey,
  signDeviceList,
  type Target,
  type TrustStore,
} from "./e2e.ts";
import type { AmtpClient } from "./mod.ts";

/** This device's keys, and the master key when this device holds it. */
export interface AccountDevice {
  /** The account. */
  address: string;
  /** The device's keys. */
  device: DeviceKeys;
  /** The account's master key, when held here. */
  master?: MasterKeys;
  /** The server record id of a version 1 key of this device (legacy messages). */
  legacyKeyId?: string;
}

/** An account's end-to-end keys from its profile (local or through federation), fresh. */
export async function keysOf(
  client: AmtpClient,
  token: string,
  address: string,
): Promise<AccountKeys> {
  // Fresh: a cached profile could miss a device added a moment ago.
  const profile = await client.call<{ public_keys?: ProfileKey[] }>(
    "user_userinfo",
    { user_token: token, address, fresh: true },
  );
  return await accountKeys(address.toLowerCase(), profile.public_keys);
}

/** Publish a device list (replacing the current one), signed with the master key. */
export async function publishList(
  client: AmtpClient,
  token: string,
  file: AccountDevice,
  current: AccountKeys,
  devices: DeviceList["devices"],
): Promise<DeviceList> {
  const counter = (current.list?.counter ?? 0) + 1;
  const record = await signDeviceList(file.master!, {
    address: file.address,
    counter,
    devices,
  });
  await client.call("user_add_public_key", { user_token: token, ...record });
  for (
    const stale of [current.listRecord, ...current.staleRecords].filter((
      id,
    ): id is string => id !== undefined)
  ) {
    await client.call("user_del_public_key", {
      user_token: token,
      key_id: stale,
    }).catch(() => {});
  }
  return {
    address: file.address,
    master: file.master!.public,
    counter,
    created: new Date(),
    devices,
  };
}

/** What `device init` did. */
export type InitResult =
  | { kind: "listed"; file: AccountDevice; list: DeviceList }
  | { kind: "pending"; file: AccountDevice };

/**
 * Set up this device: on an account without a device list, create the
 * master key and a list of this device (this device then holds the master
 * key); on an account that has one, publish this device as pending, to be
 * approved on a device holding the master key. `newMaster` replaces the
 * master key (a key change every correspondent is told about).
 */
export async function initDevice(
  client: AmtpClient,
  options: {
    token: string;
    address: string;
    label: string;
    /** Keeps the new keys (before anything names them on the server). */
    save: (file: AccountDevice) => Promise<void>;
    newMaster?: boolean;
    /** How the keys are made (a browser keeps them non-extractable). */
    keys?: KeyOptions;
    /** The master key to use when one is made (one the caller keeps a backup of); a new one otherwise. */
    master?: MasterKeys;
  },
): Promise<InitResult> {
  const address = options.address.toLowerCase();
  const current = await keysOf(client, options.token, address);
  const device = await generateDeviceKeys(options.label, options.keys);
  if (current.list && !options.newMaster) {
    const file: AccountDevice = { address, device };
    await client.call("user_add_public_key", {
      user_token: options.token,
      ...pendingRecord(device),
    });
    await options.save(file);
    return { kind: "pending", file };
  }
  const file: AccountDevice = {
    address,
    device,
    master: options.master ?? await generateMasterKeys(options.keys),
  };
  await options.save(file);
  const list = await publishList(client, options.token, file, current, [
    listed(device),
  ]);
  return { kind: "listed", file, list };
}

/**
 * Approve a pending device (this device holds the master key): a new list
 * with it, the pending record removed.
 */
export async function approveDevice(
  client: AmtpClient,
  options: { token: string; file: AccountDevice; id: string },
): Promise<DeviceList> {
  const { file } = options;
  if (!file.master) {
    throw new Error(
      "this device does not hold the master key: approve on the device that does",
    );
  }
  const current = await keysOf(client, options.token, file.address);
  const pending = current.pending.find((p) => p.id === options.id);
  if (!pending) throw new Error(`no pending device ${options.id}`);
  const devices = [...(current.list?.devices ?? []), {
    id: pending.id,
    enc: pending.enc,
    sign: pending.sign,
    label: pending.label,
    added: new Date(),
  }];
  const list = await publishList(
    client,
    options.token,
    file,
    current,
    devices,
  );
  await client.call("user_del_public_key", {
    user_token: options.token,
    key_id: pending.record,
  });
  return list;
}

/** Revoke a device (this device holds the master key): a new list without it. */
export async function revokeDevice(
  client: AmtpClient,
  options: { token: string; file: AccountDevice; id: string },
): Promise<DeviceList> {
  const { file } = options;
  if (!file.master) {
    throw new Error(
      "this device does not hold the master key: revoke on the device that does",
    );
  }
  const current = await keysOf(client, options.token, file.address);
  const devices = (current.list?.devices ?? []).filter((d) =>
    d.id !== options.id
  );
  if (devices.length === current.list?.devices.length) {
    const pending = current.pending.find((p) => p.id === options.id);
    if (!pending) throw new Error(`no device ${options.id}`);
    await client.call("user_del_public_key", {
      user_token: options.token,
      key_id: pending.record,
    });
    return current.list!;
  }
  if (devices.length === 0) {
    throw new Error("the last device cannot be revoked");
  }
  return await publishList(client, options.token, file, current, devices);
}

/** Whether a message can go out encrypted, and to which devices; or why not. */
export type EncryptionPlan =
  | {
    encrypt: true;
    /** To, Cc and the sender's own devices. */
    targets: Target[];
    /** Each Bcc recipient's devices (with the sender's own). */
    bcc: { address: string; targets: Target[] }[];
    /** Things the sender should know (devices ignored). */
    notes: string[];
  }
  | {
    encrypt: false;
    /** Why it cannot be encrypted. */
    reason: string;
    /** Whether sending in clear needs the user's explicit consent (a contact had keys, or a key changed). */
    needsConsent: boolean;
  };

/** The verdict on one recipient. */
interface Verdict {
  address: string;
  devices?: Target["devices"];
  trust?: KeyTrust | "none";
  had: boolean;
  notes: string[];
}

async function verdict(
  client: AmtpClient,
  token: string,
  address: string,
  trust: TrustStore,
): Promise<Verdict> {
  const known: ContactRecord | undefined = await trust.get(address);
  let keys: AccountKeys;
  try {
    keys = await keysOf(client, token, address);
  } catch {
    return { address, had: known !== undefined, notes: [], trust: "none" };
  }
  const notes: string[] = [];
  if (keys.pending.length) {
    notes.push(
      `ignoring ${keys.pending.length} device(s) of ${address} not signed by its master key (${
        keys.pending.map((p) => p.label || p.id).join(", ")
      })`,
    );
  }
  if (keys.invalid) {
    notes.push(
      `ignoring ${keys.invalid} device list(s) of ${address} that do not verify`,
    );
  }
  if (!keys.list) {
    return { address, had: known !== undefined, notes, trust: "none" };
  }
  const judged = await judgeContact(keys.list, trust);
  return {
    address,
    devices: keys.list.devices,
    trust: judged,
    had: true,
    notes,
  };
}

/**
 * Decide before sending: encrypt when the sender's device is in its own
 * list and every recipient has a device list whose master key is pinned
 * (first use pins it) and has not changed or rolled back. Devices outside a
 * list are never sealed to. When encryption is impossible, sending in clear
 * needs consent if any recipient had keys before (fail closed).
 */
export async function planEncryption(
  client: AmtpClient,
  options: {
    token: string;
    sender: string;
    file?: AccountDevice;
    to: string[];
    bcc: string[];
    trust: TrustStore;
  },
): Promise<EncryptionPlan> {
  const lower = (xs: string[]) => [...new Set(xs.map((x) => x.toLowerCase()))];
  const open = lower(options.to);
  const blind = lower(options.bcc).filter((x) => !open.includes(x));
  // An alias (or a catch-all) is read by the mailboxes it leads to: every
  // one of them must be encrypted to.
  const { readers, email } = await readersOf(client, options.token, [
    ...open,
    ...blind,
  ]);
  const verdicts = new Map<string, Verdict>();
  for (const address of new Set([...readers.values()].flat())) {
    verdicts.set(
      address,
      await verdict(client, options.token, address, options.trust),
    );
  }
  const all = [...verdicts.values()];
  const targetsOf = (address: string): Target[] =>
    readers.get(address)!.map((reader) => ({
      address: reader,
      devices: verdicts.get(reader)!.devices!,
    }));
  const had = all.some((v) => v.had);
  // Readers reached by ordinary email (no AMTP server): they would read it
  // in clear, and the server refuses an encrypted message to them.
  if (email.size) {
    const list = [...email];
    return {
      encrypt: false,
      needsConsent: had,
      reason: `${list.join(", ")} ${
        list.length === 1 ? "is" : "are"
      } reached by ordinary email: ${
        list.length === 1 ? "it reads" : "they read"
      } the message unencrypted`,
    };
  }
  const blocked = all.filter((v) =>
    v.trust === "changed" || v.trust === "rolled-back"
  );
  if (blocked.length) {
    return {
      encrypt: false,
      needsConsent: true,
      reason: blocked.map((v) =>
        v.trust === "changed"
          ? `${v.address} has a NEW master key: compare the safety code (amtp verify ${v.address}), then amtp trust ${v.address}`
          : `the server shows an OLDER device list of ${v.address} than seen before (a revoked device may be back)`
      ).join("; "),
    };
  }
  if (!options.file) {
    return {
      encrypt: false,
      needsConsent: had,
      reason: "this device has no encryption key (amtp device init)",
    };
  }
  const missing = all.filter((v) => !v.devices);
  if (missing.length) {
    return {
      encrypt: false,
      needsConsent: had,
      reason: `${missing.map((v) => v.address).join(", ")} ${
        missing.length === 1 ? "has" : "have"
      } no verified encryption keys`,
    };
  }
  const sender = options.sender.toLowerCase();
  const own = await keysOf(client, options.token, sender);
  const ownMaster = options.file.master;
  if (
    own.list &&
    (ownMaster
      ? b64(own.list.master) !== b64(ownMaster.public)
      : ["changed", "rolled-back"].includes(
        await judgeContact(own.list, options.trust),
      ))
  ) {
    return {
      encrypt: false,
      needsConsent: true,
      reason:
        "your own device list is not signed by your master key any more (or was rolled back): someone else may have replaced it",
    };
  }
  if (!own.list?.devices.some((d) => d.id === options.file!.device.id)) {
    return {
      encrypt: false,
      needsConsent: had,
      reason: own.pending.some((p) => p.id === options.file!.device.id)
        ? "this device is not approved yet (amtp device approve on a device with your master key)"
        : "this device is not in your device list (revoked?)",
    };
  }
  const mine: Target = { address: sender, devices: own.list.devices };
  const notes = all.flatMap((v) => v.notes);
  for (const [address, list] of readers) {
    if (list.length !== 1 || list[0] !== address) {
      notes.push(`${address} is read by ${list.join(", ")}: encrypted to each`);
    }
  }
  const unique = (targets: Target[]) => [
    ...new Map(targets.map((t) => [t.address, t])).values(),
  ];
  return {
    encrypt: true,
    targets: unique([...open.flatMap(targetsOf), mine]),
    bcc: blind.map((a) => ({
      address: a,
      targets: unique([...targetsOf(a), mine]),
    })),
    notes,
  };
}

/**
 * Who reads mail to each address: the mailboxes and remote addresses an
 * alias or catch-all leads to (the messages module's `recipients`), else
 * the address itself; and which readers ordinary email reaches.
 */
async function readersOf(
  client: AmtpClient,
  token: string,
  addresses: string[],
): Promise<{ readers: Map<string, string[]>; email: Set<string> }> {
  const readers = new Map(addresses.map((a) => [a, [a]]));
  const email = new Set<string>();
  if (addresses.length === 0) return { readers, email };
  try {
    const { recipients } = await client.call<
      {
        recipients: {
          address: string;
          mailboxes: string[];
          remote: string[];
          via: string | null;
          email?: string[];
        }[];
      }
    >("recipients", {
      module: "messages",
      user_token: token,
      addresses,
    });
    recipients.forEach((r, i) => {
      const all = [...r.mailboxes, ...r.remote].map((x) => x.toLowerCase());
      if (r.via && all.length) readers.set(addresses[i], [...new Set(all)]);
      for (const a of r.email ?? []) email.add(a.toLowerCase());
    });
  } catch {
    // A server without the command: each address reads its own mail.
  }
  return { readers, email };
}
