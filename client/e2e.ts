/**
 * End-to-end encryption for messages, in the client (Deno and browsers).
 *
 * Keys. Each account has a **master** Ed25519 key, kept on the user's own
 * devices; it signs the account's **device list** (every device's X25519 key
 * to receive, HPKE RFC 9180, and Ed25519 key to sign, with a counter that
 * only grows). The list is published in the profile as one record; a device
 * not yet approved publishes a **pending** record, which no sender uses. A
 * correspondent's master key is pinned on first sight; a different one later
 * is a key change that stays flagged, and blocks sending, until the user
 * confirms it (comparing a safety code out of band).
 *
 * Messages. A fresh AES-256-GCM content key encrypts the content and the
 * protected headers (from, to, cc, date, message id, thread reference) and
 * the attachments' names and hashes; the key is sealed with HPKE to every
 * listed device of every recipient and of the sender, each seal bound to the
 * sender, the sender's signing key, the recipient and the device; a
 * commitment to the key is signed with everything else by the sending
 * device. The server stores and relays the envelope as opaque bytes.
 *
 * @module
 */

import {
  Aes256Gcm,
  CipherSuite,
  DhkemX25519HkdfSha256,
  HkdfSha256,
} from "@hpke/core";
import { BSON } from "bson";
import { concatBytes } from "../core/wire/bytes.ts";

/** Algorithm name of a published device list (`key` is its signed BSON). */
export const DEVICE_LIST_ALGORITHM = "E2E-DEVICES-1";
/** Algorithm name of a device waiting for approval (`key`: X25519 then Ed25519, 64 bytes). */
export const PENDING_DEVICE_ALGORITHM = "E2E-DEVICE-1";
/** Envelope version written. */
export const ENVELOPE_VERSION = 2;
/** Most devices one list holds (a published key is at most 2048 bytes). */
export const MAX_DEVICES = 10;

const ED = { name: "Ed25519" } as const;
const text = new TextEncoder();

let suite: CipherSuite | undefined;
function hpke(): CipherSuite {
  suite ??= new CipherSuite({
    kem: new DhkemX25519HkdfSha256(),
    kdf: new HkdfSha256(),
    aead: new Aes256Gcm(),
  });
  return suite;
}

function buf(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes) as Uint8Array<ArrayBuffer>;
}

/** Base64 (standard, padded) of bytes. */
export function b64(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

/** Bytes of base64. */
export function unb64(value: string): Uint8Array {
  return Uint8Array.from(atob(value), (c) => c.charCodeAt(0));
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

async function sha256(bytes: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", buf(bytes)));
}

function equal(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

/** Something wrong with an envelope or a key record: tampered, not for us, unreadable. */
export class E2eError extends Error {
  /** `not_a_recipient`, `tampered` or `malformed`. */
  readonly code: "not_a_recipient" | "tampered" | "malformed";

  /** Create the error. */
  constructor(
    code: "not_a_recipient" | "tampered" | "malformed",
    message: string,
  ) {
    super(message);
    this.name = "E2eError";
    this.code = code;
  }
}

// ---------------------------------------------------------------- keys

/**
 * A private key: PKCS#8 bytes (a key file's, the CLI's), or a Web Crypto
 * key, which a browser keeps non-extractable (its bytes cannot be read,
 * not even by the page).
 */
export type PrivateKey = Uint8Array | CryptoKey;

/** A device's keys, private parts included (kept on the device). */
export interface DeviceKeys {
  /** Device label. */
  label: string;
  /** Device id: {@link deviceId} of its public keys. */
  id: string;
  /** X25519 private key. */
  encryptPrivate: PrivateKey;
  /** X25519 public key, raw 32 bytes. */
  encryptPublic: Uint8Array;
  /** Ed25519 private key. */
  signPrivate: PrivateKey;
  /** Ed25519 public key, raw 32 bytes. */
  signPublic: Uint8Array;
}

/** An account's master key (on the devices that hold it). */
export interface MasterKeys {
  /** Ed25519 private key. */
  private: PrivateKey;
  /** Ed25519 public key, raw 32 bytes. */
  public: Uint8Array;
}

/** How new keys are made: `extractable: false` keeps them as Web Crypto keys whose bytes cannot be read. */
export interface KeyOptions {
  /** Default true: PKCS#8 bytes (to store in a file). */
  extractable?: boolean;
}

/** The PKCS#8 bytes of a private key made extractable; throws for a Web Crypto key. */
export function pkcs8Of(key: PrivateKey): Uint8Array {
  if (key instanceof Uint8Array) return key;
  throw new E2eError(
    "malformed",
    "this key is kept in the browser and cannot be read",
  );
}

/** A device as a list (or a pending record) names it. */
export interface ListedDevice {
  /** Device id. */
  id: string;
  /** X25519 public key, raw. */
  enc: Uint8Array;
  /** Ed25519 public key, raw. */
  sign: Uint8Array;
  /** Its name. */
  label: string;
  /** When it was added to the list (pending: published). */
  added: Date;
}

/** A device list, signed by the account's master key. */
export interface DeviceList {
  /** The account. */
  address: string;
  /** The master key that signed it (raw Ed25519). */
  master: Uint8Array;
  /** Grows with every new list; a lower one than seen before is a rollback. */
  counter: number;
  /** When it was signed. */
  created: Date;
  /** The approved devices. */
  devices: ListedDevice[];
}

/** The id of a device: the first 16 hex digits of SHA-256 over its X25519 then Ed25519 public keys. */
export async function deviceId(
  enc: Uint8Array,
  sign: Uint8Array,
): Promise<string> {
  return hex((await sha256(concatBytes(enc, sign))).subarray(0, 8));
}

/** A new key pair: the private key as PKCS#8 bytes, or kept as a non-extractable Web Crypto key. */
async function newPair(
  algorithm: "Ed25519" | "X25519",
  options: KeyOptions,
): Promise<{ priv: PrivateKey; pub: Uint8Array }> {
  const extractable = options.extractable ?? true;
  const pair = await crypto.subtle.generateKey(
    { name: algorithm },
    extractable,
    algorithm === "Ed25519" ? ["sign", "verify"] : ["deriveBits"],
  ) as CryptoKeyPair;
  return {
    priv: extractable
      ? new Uint8Array(await crypto.subtle.exportKey("pkcs8", pair.privateKey))
      : pair.privateKey,
    pub: new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey)),
  };
}

/** Generate a device's keys. */
export async function generateDeviceKeys(
  label: string,
  options: KeyOptions = {},
): Promise<DeviceKeys> {
  const enc = await newPair("X25519", options);
  const sig = await newPair("Ed25519", options);
  return {
    label,
    id: await deviceId(enc.pub, sig.pub),
    encryptPrivate: enc.priv,
    encryptPublic: enc.pub,
    signPrivate: sig.priv,
    signPublic: sig.pub,
  };
}

/** Generate an account's master key. */
export async function generateMasterKeys(
  options: KeyOptions = {},
): Promise<MasterKeys> {
  const pair = await newPair("Ed25519", options);
  return { private: pair.priv, public: pair.pub };
}

/** What a device adds to a list. */
export function listed(device: DeviceKeys, added = new Date()): ListedDevice {
  return {
    id: device.id,
    enc: device.encryptPublic,
    sign: device.signPublic,
    label: device.label,
    added,
  };
}

async function sign(key: PrivateKey, data: Uint8Array): Promise<Uint8Array> {
  const usable = key instanceof Uint8Array
    ? await crypto.subtle.importKey("pkcs8", buf(key), ED, false, ["sign"])
    : key;
  return new Uint8Array(await crypto.subtle.sign(ED, usable, buf(data)));
}

/**
 * The X25519 key pair HPKE opens with: the public half is given, so a
 * non-extractable private key needs no export.
 */
async function x25519Pair(
  key: PrivateKey,
  publicRaw: Uint8Array,
): Promise<CryptoKeyPair> {
  const privateKey = key instanceof Uint8Array
    ? await crypto.subtle.importKey(
      "pkcs8",
      buf(key),
      { name: "X25519" },
      false,
      [
        "deriveBits",
      ],
    )
    : key;
  const publicKey = await crypto.subtle.importKey(
    "raw",
    buf(publicRaw),
    { name: "X25519" },
    true,
    [],
  );
  return { privateKey, publicKey };
}

async function verify(
  raw: Uint8Array,
  signature: Uint8Array,
  data: Uint8Array,
): Promise<boolean> {
  try {
    const key = await crypto.subtle.importKey("raw", buf(raw), ED, false, [
      "verify",
    ]);
    return await crypto.subtle.verify(ED, key, buf(signature), buf(data));
  } catch {
    return false;
  }
}

function listBody(list: DeviceList): Uint8Array {
  return BSON.serialize({
    v: 1,
    address: list.address,
    master: list.master,
    counter: list.counter,
    created: list.created,
    devices: list.devices.map((d) => ({
      id: d.id,
      enc: d.enc,
      sign: d.sign,
      label: d.label,
      added: d.added,
    })),
  });
}

/**
 * The published record of a device list signed with the master key
 * (`user_add_public_key` parameters).
 */
export async function signDeviceList(
  master: MasterKeys,
  list: Omit<DeviceList, "master" | "created"> & { created?: Date },
): Promise<{ algorithm: string; key: Uint8Array; label: string }> {
  if (list.devices.length === 0 || list.devices.length > MAX_DEVICES) {
    throw new E2eError(
      "malformed",
      `a device list holds 1 to ${MAX_DEVICES} devices`,
    );
  }
  const full: DeviceList = {
    ...list,
    master: master.public,
    created: list.created ?? new Date(),
  };
  const body = listBody(full);
  const sig = await sign(
    master.private,
    concatBytes(text.encode("AMTP e2e device list\n"), await sha256(body)),
  );
  return {
    algorithm: DEVICE_LIST_ALGORITHM,
    key: new Uint8Array(BSON.serialize({ list: body, sig })),
    label: `devices #${full.counter}`,
  };
}

/**
 * Read and verify a published device list of `address`.
 *
 * @throws {E2eError} `malformed` or `tampered` (bad signature, another account's list)
 */
export async function parseDeviceList(
  key: Uint8Array,
  address: string,
): Promise<DeviceList> {
  let body: Uint8Array;
  let doc: Record<string, unknown>;
  let sig: Uint8Array;
  try {
    const outer = BSON.deserialize(key, { promoteBuffers: true });
    body = outer.list as Uint8Array;
    sig = outer.sig as Uint8Array;
    doc = BSON.deserialize(body, { promoteBuffers: true });
  } catch {
    throw new E2eError("malformed", "an unreadable device list");
  }
  const devices = doc.devices as Record<string, unknown>[];
  if (
    doc.v !== 1 || typeof doc.address !== "string" ||
    !(doc.master instanceof Uint8Array) || doc.master.length !== 32 ||
    typeof doc.counter !== "number" || !(doc.created instanceof Date) ||
    !Array.isArray(devices) || devices.length > MAX_DEVICES ||
    !(sig instanceof Uint8Array)
  ) {
    throw new E2eError("malformed", "a device list of an unknown shape");
  }
  if (doc.address !== address.toLowerCase()) {
    throw new E2eError("tampered", "a device list of another account");
  }
  if (
    !(await verify(
      doc.master,
      sig,
      concatBytes(text.encode("AMTP e2e device list\n"), await sha256(body)),
    ))
  ) {
    throw new E2eError(
      "tampered",
      "a device list whose signature does not verify",
    );
  }
  const parsed: ListedDevice[] = [];
  for (const d of devices) {
    if (
      typeof d.id !== "string" || !(d.enc instanceof Uint8Array) ||
      d.enc.length !== 32 || !(d.sign instanceof Uint8Array) ||
      d.sign.length !== 32 || d.id !== await deviceId(d.enc, d.sign)
    ) {
      throw new E2eError("malformed", "a device list with a broken entry");
    }
    parsed.push({
      id: d.id,
      enc: d.enc,
      sign: d.sign,
      label: typeof d.label === "string" ? d.label : "",
      added: d.added instanceof Date ? d.added : new Date(0),
    });
  }
  return {
    address: doc.address,
    master: doc.master,
    counter: doc.counter,
    created: doc.created,
    devices: parsed,
  };
}

/** A profile's `public_keys` entry. */
export interface ProfileKey {
  /** Record id (server-assigned). */
  key_id: string;
  /** Label. */
  label: string;
  /** Algorithm name. */
  algorithm: string;
  /** Key bytes. */
  key: Uint8Array;
  /** When published. */
  created?: Date;
}

/** What a profile says about an account's end-to-end keys. */
export interface AccountKeys {
  /** The valid device list with the highest counter, if any. */
  list?: DeviceList;
  /** Its record id (to replace it). */
  listRecord?: string;
  /** Other list records (older, or not verifying): their ids. */
  staleRecords: string[];
  /** Devices published but not in the list: never sealed to. */
  pending: (ListedDevice & { record: string })[];
  /** Records that did not verify (forged or broken lists). */
  invalid: number;
}

/** Read an account's keys from its profile (every list record is verified). */
export async function accountKeys(
  address: string,
  keys: ProfileKey[] = [],
): Promise<AccountKeys> {
  const out: AccountKeys = { staleRecords: [], pending: [], invalid: 0 };
  for (const k of keys) {
    if (k.algorithm !== DEVICE_LIST_ALGORITHM) continue;
    try {
      const list = await parseDeviceList(k.key, address);
      if (!out.list || list.counter > out.list.counter) {
        if (out.listRecord) out.staleRecords.push(out.listRecord);
        out.list = list;
        out.listRecord = k.key_id;
      } else out.staleRecords.push(k.key_id);
    } catch {
      out.invalid++;
      out.staleRecords.push(k.key_id);
    }
  }
  for (const k of keys) {
    if (
      k.algorithm !== PENDING_DEVICE_ALGORITHM ||
      !(k.key instanceof Uint8Array) || k.key.length !== 64
    ) continue;
    const enc = k.key.subarray(0, 32);
    const sign = k.key.subarray(32);
    const id = await deviceId(enc, sign);
    if (out.list?.devices.some((d) => d.id === id)) continue;
    out.pending.push({
      id,
      enc,
      sign,
      label: k.label,
      added: k.created ?? new Date(0),
      record: k.key_id,
    });
  }
  return out;
}

/** The record a device publishes while it waits for approval. */
export function pendingRecord(
  device: DeviceKeys,
): { algorithm: string; key: Uint8Array; label: string } {
  return {
    algorithm: PENDING_DEVICE_ALGORITHM,
    key: concatBytes(device.encryptPublic, device.signPublic),
    label: device.label,
  };
}

function digits(bytes: Uint8Array, groups: number): string {
  const out: string[] = [];
  for (let g = 0; g < groups; g++) {
    let n = 0;
    for (let i = 0; i < 5; i++) n = n * 256 + bytes[g * 5 + i];
    out.push(String(n % 100000).padStart(5, "0"));
  }
  return out.join(" ");
}

/**
 * The code two people compare out of band to verify each other's master
 * keys: 30 digits from SHA-256 over both (address, master key) pairs in a
 * fixed order, the same on both sides.
 */
export async function safetyCode(
  a: { address: string; master: Uint8Array },
  b: { address: string; master: Uint8Array },
): Promise<string> {
  const part = (x: { address: string; master: Uint8Array }) =>
    concatBytes(text.encode(`${x.address.toLowerCase()}\n`), x.master);
  const [first, second] = [part(a), part(b)].sort((x, y) =>
    b64(x) < b64(y) ? -1 : 1
  );
  return digits(
    await sha256(concatBytes(text.encode("AMTP safety code\n"), first, second)),
    6,
  );
}

/** The code shown on a new device and on the approving one, to compare before approval. */
export async function deviceCode(
  address: string,
  device: { enc: Uint8Array; sign: Uint8Array },
): Promise<string> {
  return digits(
    await sha256(
      concatBytes(
        text.encode(`AMTP device code\n${address.toLowerCase()}\n`),
        device.enc,
        device.sign,
      ),
    ),
    6,
  );
}

// ---------------------------------------------------------------- messages

/** The headers a sender protects: inside the ciphertext, signed. */
export interface ProtectedHeaders {
  /** The sender's address. */
  from: string;
  /** The sending device's id. */
  sender_device: string;
  /** Recipients as shown. */
  to: string[];
  /** Copy recipients as shown. */
  cc: string[];
  /** Set only in a Bcc recipient's own envelope: that recipient. */
  bcc?: string[];
  /** When it was written. */
  date: Date;
  /** The message's global id (`<message id>@<sender's domain>`). */
  message_id: string;
  /** The global id of the message it answers. */
  in_reply_to: string | null;
}

/** An attachment as the encrypted content names it. */
export interface SecretAttachment {
  /** The upload's id. */
  attachment_id: string;
  /** Real file name. */
  name: string;
  /** Real type. */
  type: string;
  /** AES-GCM nonce of its encryption. */
  nonce: Uint8Array;
  /** SHA-256 (hex) of the plain file. */
  sha256: string;
  /** SHA-256 (hex) of the encrypted upload the server stores. */
  stored_sha256: string;
}

/** What travels encrypted. */
export interface SecretContent {
  /** Subject (the server sees an empty one). */
  subject: string;
  /** Body text. */
  body: string;
  /** `text`, `markdown` or `html`. */
  format: string;
  /** Attachments. */
  attachments?: SecretAttachment[];
  /** Protected headers (absent in legacy version 1 envelopes). */
  headers?: ProtectedHeaders;
}

/** A recipient's devices to seal to. */
export interface Target {
  /** Address. */
  address: string;
  /** Devices (of its verified list). */
  devices: ListedDevice[];
}

/** The outcome of opening an envelope. */
export interface Opened {
  /** Envelope version (1: legacy, without protected headers or commitment). */
  version: number;
  /** The decrypted content. */
  content: SecretContent;
  /** The sender the envelope names. */
  sender: string;
  /** The sending device's id and signing key. */
  senderDevice: { id: string; sign: Uint8Array };
  /** Whether the signature verified with that key (and the protected sender matches). */
  signatureValid: boolean;
  /** The content key (to decrypt attachments). */
  contentKey: Uint8Array;
}

function sealInfo(
  sender: string,
  senderSign: Uint8Array,
  address: string,
  device: string,
): Uint8Array {
  return text.encode(
    `AMTP e2e v2\n${sender}\n${b64(senderSign)}\n${address}\n${device}`,
  );
}

async function commitmentOf(contentKey: Uint8Array): Promise<Uint8Array> {
  return await sha256(
    concatBytes(text.encode("AMTP e2e v2 key commitment\n"), contentKey),
  );
}

function signedPart(env: Record<string, unknown>): Uint8Array {
  return BSON.serialize({
    v: env.v,
    sender: env.sender,
    sender_device: env.sender_device,
    sender_sign: env.sender_sign,
    nonce: env.nonce,
    ciphertext: env.ciphertext,
    commitment: env.commitment,
    recipients: env.recipients,
  });
}

async function aesKey(
  contentKey: Uint8Array,
  use: "encrypt" | "decrypt",
): Promise<CryptoKey> {
  return await crypto.subtle.importKey(
    "raw",
    buf(contentKey),
    "AES-GCM",
    false,
    [use],
  );
}

/**
 * Encrypt content with protected headers for recipients' devices (the
 * sender's own devices included by the caller), signed by the sending device.
 */
export async function encryptMessage(
  content: Omit<SecretContent, "headers">,
  options: {
    sender: string;
    device: DeviceKeys;
    recipients: Target[];
    headers: Omit<ProtectedHeaders, "from" | "sender_device">;
    contentKey?: Uint8Array;
  },
): Promise<Uint8Array> {
  const sender = options.sender.toLowerCase();
  const contentKey = options.contentKey ??
    crypto.getRandomValues(new Uint8Array(32));
  const commitment = await commitmentOf(contentKey);
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const inner: SecretContent = {
    ...content,
    headers: {
      ...options.headers,
      from: sender,
      sender_device: options.device.id,
    },
  };
  const ciphertext = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce, additionalData: buf(commitment) },
      await aesKey(contentKey, "encrypt"),
      buf(BSON.serialize(inner as unknown as Record<string, unknown>)),
    ),
  );
  const recipients = [];
  for (const r of options.recipients) {
    const address = r.address.toLowerCase();
    for (const device of r.devices) {
      const publicKey = await crypto.subtle.importKey(
        "raw",
        buf(device.enc),
        { name: "X25519" },
        true,
        [],
      );
      const context = await hpke().createSenderContext({
        recipientPublicKey: publicKey,
        info: buf(
          sealInfo(sender, options.device.signPublic, address, device.id),
        ),
      });
      const sealed = new Uint8Array(
        await context.seal(buf(contentKey), buf(commitment)),
      );
      recipients.push({
        address,
        device: device.id,
        enc: new Uint8Array(context.enc),
        sealed_key: sealed,
      });
    }
  }
  const envelope: Record<string, unknown> = {
    v: ENVELOPE_VERSION,
    sender,
    sender_device: options.device.id,
    sender_sign: options.device.signPublic,
    nonce,
    ciphertext,
    commitment,
    recipients,
  };
  envelope.signature = await sign(
    options.device.signPrivate,
    await sha256(signedPart(envelope)),
  );
  return new Uint8Array(BSON.serialize(envelope));
}

/**
 * Open an envelope as `address` with a device's keys. A tampered envelope
 * throws; a bad signature is reported, not hidden. Version 1 envelopes
 * (before protected headers) still open, marked as such.
 */
export async function decryptMessage(
  bytes: Uint8Array,
  options: { address: string; device: DeviceKeys; legacyKeyId?: string },
): Promise<Opened> {
  let env: Record<string, unknown>;
  try {
    env = BSON.deserialize(bytes, { promoteBuffers: true });
  } catch {
    throw new E2eError("malformed", "the encrypted message cannot be read");
  }
  if (env.v === 1) return await openLegacy(env, options);
  if (
    env.v !== ENVELOPE_VERSION || !Array.isArray(env.recipients) ||
    typeof env.sender !== "string" ||
    !(env.sender_sign instanceof Uint8Array) ||
    !(env.commitment instanceof Uint8Array) ||
    !(env.nonce instanceof Uint8Array) ||
    !(env.ciphertext instanceof Uint8Array)
  ) {
    throw new E2eError("malformed", "unknown encrypted message format");
  }
  const address = options.address.toLowerCase();
  const mine = (env.recipients as {
    address: string;
    device: string;
    enc: Uint8Array;
    sealed_key: Uint8Array;
  }[]).find((r) => r.address === address && r.device === options.device.id);
  if (!mine) {
    throw new E2eError(
      "not_a_recipient",
      "this device is not among the message's recipients",
    );
  }
  let contentKey: Uint8Array;
  try {
    const context = await hpke().createRecipientContext({
      recipientKey: await x25519Pair(
        options.device.encryptPrivate,
        options.device.encryptPublic,
      ),
      enc: buf(mine.enc),
      info: buf(sealInfo(env.sender, env.sender_sign, address, mine.device)),
    });
    contentKey = new Uint8Array(
      await context.open(buf(mine.sealed_key), buf(env.commitment)),
    );
  } catch {
    throw new E2eError(
      "tampered",
      "the sealed key does not open: the message was changed, re-signed by someone else, or is not for this device",
    );
  }
  if (!equal(await commitmentOf(contentKey), env.commitment)) {
    throw new E2eError(
      "tampered",
      "the content key does not match its commitment",
    );
  }
  let content: SecretContent;
  try {
    const plain = await crypto.subtle.decrypt(
      {
        name: "AES-GCM",
        iv: buf(env.nonce),
        additionalData: buf(env.commitment),
      },
      await aesKey(contentKey, "decrypt"),
      buf(env.ciphertext),
    );
    content = BSON.deserialize(new Uint8Array(plain), {
      promoteBuffers: true,
    }) as unknown as SecretContent;
  } catch {
    throw new E2eError(
      "tampered",
      "the content does not decrypt: the message was changed",
    );
  }
  const signatureValid = await verify(
    env.sender_sign,
    env.signature as Uint8Array,
    await sha256(signedPart(env)),
  ) &&
    content.headers?.from === env.sender &&
    content.headers?.sender_device === env.sender_device;
  return {
    version: 2,
    content,
    sender: env.sender,
    senderDevice: { id: String(env.sender_device), sign: env.sender_sign },
    signatureValid,
    contentKey,
  };
}

/** Open a version 1 envelope (stored before version 2): no protected headers, no commitment. */
async function openLegacy(
  env: Record<string, unknown>,
  options: { address: string; device: DeviceKeys; legacyKeyId?: string },
): Promise<Opened> {
  const mine = (env.recipients as {
    address: string;
    key_id: string;
    enc: Uint8Array;
    sealed_key: Uint8Array;
  }[]).find((r) =>
    r.address === options.address && r.key_id === options.legacyKeyId
  );
  if (!mine) {
    throw new E2eError(
      "not_a_recipient",
      "this device is not among the message's recipients",
    );
  }
  let contentKey: Uint8Array;
  let content: SecretContent;
  try {
    const context = await hpke().createRecipientContext({
      recipientKey: await x25519Pair(
        options.device.encryptPrivate,
        options.device.encryptPublic,
      ),
      enc: buf(mine.enc),
      info: buf(text.encode("AMTP e2e v1")),
    });
    contentKey = new Uint8Array(
      await context.open(
        buf(mine.sealed_key),
        buf(text.encode(`${mine.address}\n${mine.key_id}`)),
      ),
    );
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: buf(env.nonce as Uint8Array) },
      await aesKey(contentKey, "decrypt"),
      buf(env.ciphertext as Uint8Array),
    );
    content = BSON.deserialize(new Uint8Array(plain), {
      promoteBuffers: true,
    }) as unknown as SecretContent;
  } catch {
    throw new E2eError("tampered", "the legacy envelope does not open");
  }
  const { signature: _, ...rest } = env;
  const signatureValid = await verify(
    env.sender_sign as Uint8Array,
    env.signature as Uint8Array,
    await sha256(BSON.serialize({
      v: rest.v,
      sender: rest.sender,
      sender_key_id: rest.sender_key_id,
      sender_sign: rest.sender_sign,
      nonce: rest.nonce,
      ciphertext: rest.ciphertext,
      recipients: rest.recipients,
    })),
  );
  return {
    version: 1,
    content: { ...content, headers: undefined },
    sender: String(env.sender),
    senderDevice: {
      id: String(env.sender_key_id),
      sign: env.sender_sign as Uint8Array,
    },
    signatureValid,
    contentKey,
  };
}

/** Encrypt attachment bytes with the message's content key. */
export async function encryptAttachment(
  contentKey: Uint8Array,
  data: Uint8Array,
): Promise<{ nonce: Uint8Array; data: Uint8Array }> {
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  return {
    nonce,
    data: new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv: nonce },
        await aesKey(contentKey, "encrypt"),
        buf(data),
      ),
    ),
  };
}

/** The size of an encrypted attachment's plain file: AES-GCM adds a 16-byte tag. */
export function plainAttachmentSize(storedSize: number): number {
  return Math.max(0, storedSize - 16);
}

/** Decrypt attachment bytes; throws {@link E2eError} when changed. */
export async function decryptAttachment(
  contentKey: Uint8Array,
  nonce: Uint8Array,
  data: Uint8Array,
): Promise<Uint8Array> {
  try {
    return new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: buf(nonce) },
        await aesKey(contentKey, "decrypt"),
        buf(data),
      ),
    );
  } catch {
    throw new E2eError(
      "tampered",
      "the attachment does not decrypt: it was changed",
    );
  }
}

// ---------------------------------------------------------------- checks

/** What the server shows of a message (outside the encryption). */
export interface OuterCopy {
  /** The copy's global id. */
  global_id?: string;
  /** Sender. */
  from: string;
  /** Recipients. */
  to: string[];
  /** Copy recipients. */
  cc: string[];
  /** Date. */
  date: Date;
  /** Attachments the server lists: upload id and SHA-256 of the stored bytes. */
  attachments: { id: string; sha256: string }[];
}

/**
 * Where the server's copy disagrees with the signed headers and the signed
 * attachment list: each a sentence for the reader. `parentGlobalId` is the
 * global id of the message the server threads this one under (if any).
 */
export function headerMismatches(
  opened: Opened,
  outer: OuterCopy,
  parentGlobalId?: string | null,
): string[] {
  const h = opened.content.headers;
  if (!h) return ["legacy envelope: its headers are not protected"];
  const out: string[] = [];
  const same = (a: string[], b: string[]) =>
    [...a].map((x) => x.toLowerCase()).sort().join() ===
      [...b].map((x) => x.toLowerCase()).sort().join();
  if (h.from !== outer.from.toLowerCase()) {
    out.push(
      `the server shows it from ${outer.from}, the sender signed ${h.from}`,
    );
  }
  if (!same(h.to, outer.to)) {
    out.push(
      `the server shows To ${outer.to.join(", ")}, the sender signed ${
        h.to.join(", ")
      }`,
    );
  }
  if (!same(h.cc, outer.cc)) {
    out.push(
      `the server shows Cc ${outer.cc.join(", ")}, the sender signed ${
        h.cc.join(", ")
      }`,
    );
  }
  if (Math.abs(h.date.getTime() - outer.date.getTime()) > 5 * 60_000) {
    out.push(
      `the server dates it ${outer.date.toISOString()}, the sender signed ${h.date.toISOString()}`,
    );
  }
  if (outer.global_id && outer.global_id !== h.message_id) {
    out.push(
      `the server delivered it as ${outer.global_id}, the sender signed ${h.message_id} (replayed or moved)`,
    );
  }
  if (
    parentGlobalId !== undefined && (parentGlobalId ?? null) !== h.in_reply_to
  ) {
    out.push(
      `the server threads it under ${
        parentGlobalId ?? "nothing"
      }, the sender signed a reply to ${h.in_reply_to ?? "nothing"}`,
    );
  }
  const signed = opened.content.attachments ?? [];
  for (const a of outer.attachments) {
    const inner = signed.find((s) => s.attachment_id === a.id);
    if (!inner) {
      out.push(
        `attachment ${a.id} is not signed by the sender (added by a server)`,
      );
    } else if (inner.stored_sha256 !== a.sha256) {
      out.push(`attachment ${inner.name} differs from what the sender signed`);
    }
  }
  for (const s of signed) {
    if (!outer.attachments.some((a) => a.id === s.attachment_id)) {
      out.push(
        `attachment ${s.name} signed by the sender is missing (removed by a server)`,
      );
    }
  }
  return out;
}

// ---------------------------------------------------------------- trust

/** What a client remembers of a correspondent. */
export interface ContactRecord {
  /** The pinned master key (base64). */
  master: string;
  /** Whether the user confirmed it (compared the safety code). */
  confirmed: boolean;
  /** Highest device list counter seen under the pinned master. */
  counter: number;
  /** A different master key seen and not yet confirmed (base64). */
  changed?: string;
}

/** Storage of contact records and of message ids seen per sender (replays). */
export interface TrustStore {
  /** The record of an address. */
  get(address: string): Promise<ContactRecord | undefined>;
  /** Replace the record of an address. */
  set(address: string, record: ContactRecord): Promise<void>;
  /** Remember that `messageId` of `sender` arrived as `copy`; answers the copy it first arrived as. */
  seen(sender: string, messageId: string, copy: string): Promise<string>;
}

/** How a correspondent's current keys compare with what the client knew. */
export type KeyTrust =
  | "confirmed"
  | "known"
  | "first-use"
  | "changed"
  | "rolled-back";

/**
 * Judge an account's current device list against what the client pinned: a
 * first list is pinned (trust on first use); the same master is `known` or
 * `confirmed`; another master is `changed` — every time, until
 * {@link confirmContact}; a lower counter than seen is `rolled-back` (a
 * server showing an old list, e.g. with a revoked device).
 */
export async function judgeContact(
  list: DeviceList,
  trust: TrustStore,
): Promise<KeyTrust> {
  const address = list.address;
  const master = b64(list.master);
  const known = await trust.get(address);
  if (!known) {
    await trust.set(address, {
      master,
      confirmed: false,
      counter: list.counter,
    });
    return "first-use";
  }
  if (known.master !== master) {
    if (known.changed !== master) {
      await trust.set(address, { ...known, changed: master });
    }
    return "changed";
  }
  if (list.counter < known.counter) return "rolled-back";
  if (list.counter > known.counter) {
    await trust.set(address, { ...known, counter: list.counter });
  }
  return known.confirmed ? "confirmed" : "known";
}

/** The user confirms an account's current master key (after comparing the safety code). */
export async function confirmContact(
  list: DeviceList,
  trust: TrustStore,
): Promise<void> {
  await trust.set(list.address, {
    master: b64(list.master),
    confirmed: true,
    counter: list.counter,
  });
}

/** A trust store in memory (tests, short-lived clients). */
export class MemoryTrustStore implements TrustStore {
  readonly #contacts = new Map<string, ContactRecord>();
  readonly #seen = new Map<string, string>();

  /** The record of an address. */
  get(address: string): Promise<ContactRecord | undefined> {
    const record = this.#contacts.get(address);
    return Promise.resolve(record && { ...record });
  }

  /** Replace a record. */
  set(address: string, record: ContactRecord): Promise<void> {
    this.#contacts.set(address, { ...record });
    return Promise.resolve();
  }

  /** Remember a message id. */
  seen(sender: string, messageId: string, copy: string): Promise<string> {
    const key = `${sender}\n${messageId}`;
    if (!this.#seen.has(key)) this.#seen.set(key, copy);
    return Promise.resolve(this.#seen.get(key)!);
  }
}
