/**
 * End-to-end encryption for messages, in the client (Deno and browsers).
 *
 * Each device has an X25519 key (HPKE, RFC 9180) to receive and an Ed25519
 * key to sign; the private parts stay on the device. A device publishes both
 * public keys as one record of algorithm {@link DEVICE_ALGORITHM} (64 bytes:
 * X25519 then Ed25519) through `user_add_public_key`.
 *
 * A message is encrypted with a fresh AES-256-GCM content key; the key is
 * sealed with HPKE to every device of every recipient and to the sender's own
 * devices; the whole envelope is signed with the sending device's Ed25519 key.
 * The server stores and relays the envelope as opaque bytes.
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

/** Algorithm name of a published device record. */
export const DEVICE_ALGORITHM = "E2E-DEVICE-1";
/** Envelope version. */
export const ENVELOPE_VERSION = 1;

const HPKE_INFO = new TextEncoder().encode("AMTP e2e v1");
const ED = { name: "Ed25519" } as const;

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

/** A device's keys, private parts included (kept on the device). */
export interface DeviceKeys {
  /** Device label. */
  label: string;
  /** X25519 private key, PKCS#8. */
  encryptPrivate: Uint8Array;
  /** X25519 public key, raw 32 bytes. */
  encryptPublic: Uint8Array;
  /** Ed25519 private key, PKCS#8. */
  signPrivate: Uint8Array;
  /** Ed25519 public key, raw 32 bytes. */
  signPublic: Uint8Array;
  /** The id the server gave the published record, once published. */
  keyId?: string;
}

/** A published device of a user, as read from a profile. */
export interface PublishedDevice {
  /** Record id. */
  key_id: string;
  /** Device label. */
  label: string;
  /** X25519 public key, raw. */
  encrypt: Uint8Array;
  /** Ed25519 public key, raw. */
  sign: Uint8Array;
  /** When it was published. */
  created?: Date;
}

/** What travels encrypted. */
export interface SecretContent {
  /** Subject (the server sees an empty one). */
  subject: string;
  /** Body text. */
  body: string;
  /** `text`, `markdown` or `html`. */
  format: string;
  /** Attachments: their names, types and the keys of their encrypted uploads. */
  attachments?: {
    attachment_id: string;
    name: string;
    type: string;
    nonce: Uint8Array;
    sha256: string;
  }[];
}

/** The outcome of opening an envelope. */
export interface Opened {
  /** The decrypted content. */
  content: SecretContent;
  /** The sender the envelope names. */
  sender: string;
  /** The sending device's record id and signing key. */
  senderDevice: { key_id: string; sign: Uint8Array };
  /** Whether the signature verified with that key. */
  signatureValid: boolean;
  /** The content key (to decrypt attachments). */
  contentKey: Uint8Array;
}

/** Something wrong with an envelope: tampered, not for us, unreadable. */
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

/** Generate a device's keys. */
export async function generateDeviceKeys(label: string): Promise<DeviceKeys> {
  const enc = await crypto.subtle.generateKey({ name: "X25519" }, true, [
    "deriveBits",
  ]) as CryptoKeyPair;
  const sig = await crypto.subtle.generateKey(ED, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  return {
    label,
    encryptPrivate: new Uint8Array(
      await crypto.subtle.exportKey("pkcs8", enc.privateKey),
    ),
    encryptPublic: new Uint8Array(
      await crypto.subtle.exportKey("raw", enc.publicKey),
    ),
    signPrivate: new Uint8Array(
      await crypto.subtle.exportKey("pkcs8", sig.privateKey),
    ),
    signPublic: new Uint8Array(
      await crypto.subtle.exportKey("raw", sig.publicKey),
    ),
  };
}

/** The public record a device publishes (`user_add_public_key` parameters). */
export function deviceRecord(
  keys: DeviceKeys,
): { algorithm: string; key: Uint8Array; label: string } {
  return {
    algorithm: DEVICE_ALGORITHM,
    key: concatBytes(keys.encryptPublic, keys.signPublic),
    label: keys.label,
  };
}

/** The devices in a profile's `public_keys`. */
export function devicesOf(
  profile: {
    public_keys?: {
      key_id: string;
      label: string;
      algorithm: string;
      key: Uint8Array;
      created?: Date;
    }[];
  },
): PublishedDevice[] {
  return (profile.public_keys ?? [])
    .filter((k) =>
      k.algorithm === DEVICE_ALGORITHM && k.key instanceof Uint8Array &&
      k.key.length === 64
    )
    .map((k) => ({
      key_id: k.key_id,
      label: k.label,
      encrypt: k.key.subarray(0, 32),
      sign: k.key.subarray(32),
      created: k.created,
    }));
}

async function digest(bytes: Uint8Array): Promise<Uint8Array> {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", buf(bytes)));
}

/** The bytes a signature covers: everything but the signature, in a fixed order. */
function signedPart(env: Record<string, unknown>): Uint8Array {
  const { signature: _, ...rest } = env;
  return BSON.serialize({
    v: rest.v,
    sender: rest.sender,
    sender_key_id: rest.sender_key_id,
    sender_sign: rest.sender_sign,
    nonce: rest.nonce,
    ciphertext: rest.ciphertext,
    recipients: rest.recipients,
  });
}

/**
 * Encrypt content for recipients' devices (the sender's own devices included
 * by the caller), signed by the sending device.
 */
export async function encryptMessage(
  content: SecretContent,
  options: {
    sender: string;
    device: DeviceKeys;
    recipients: { address: string; devices: PublishedDevice[] }[];
    contentKey?: Uint8Array;
  },
): Promise<Uint8Array> {
  if (!options.device.keyId) {
    throw new Error("publish the device keys first (no key id)");
  }
  const contentKey = options.contentKey ??
    crypto.getRandomValues(new Uint8Array(32));
  const aesKey = await crypto.subtle.importKey(
    "raw",
    buf(contentKey),
    "AES-GCM",
    false,
    ["encrypt"],
  );
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  const plaintext = BSON.serialize(
    content as unknown as Record<string, unknown>,
  );
  const ciphertext = new Uint8Array(
    await crypto.subtle.encrypt(
      { name: "AES-GCM", iv: nonce },
      aesKey,
      buf(plaintext),
    ),
  );
  const recipients = [];
  for (const r of options.recipients) {
    for (const device of r.devices) {
      const publicKey = await crypto.subtle.importKey(
        "raw",
        buf(device.encrypt),
        { name: "X25519" },
        true,
        [],
      );
      const sender = await hpke().createSenderContext({
        recipientPublicKey: publicKey,
        info: HPKE_INFO,
      });
      const sealed = new Uint8Array(
        await sender.seal(
          buf(contentKey),
          buf(new TextEncoder().encode(`${r.address}\n${device.key_id}`)),
        ),
      );
      recipients.push({
        address: r.address,
        key_id: device.key_id,
        enc: new Uint8Array(sender.enc),
        sealed_key: sealed,
      });
    }
  }
  const envelope: Record<string, unknown> = {
    v: ENVELOPE_VERSION,
    sender: options.sender,
    sender_key_id: options.device.keyId,
    sender_sign: options.device.signPublic,
    nonce,
    ciphertext,
    recipients,
  };
  const signKey = await crypto.subtle.importKey(
    "pkcs8",
    buf(options.device.signPrivate),
    ED,
    false,
    ["sign"],
  );
  envelope.signature = new Uint8Array(
    await crypto.subtle.sign(
      ED,
      signKey,
      buf(await digest(signedPart(envelope))),
    ),
  );
  return new Uint8Array(BSON.serialize(envelope));
}

/**
 * Open an envelope as `address` with a device's keys. Decryption failures of
 * a tampered envelope throw; a bad signature is reported, not hidden.
 */
export async function decryptMessage(
  bytes: Uint8Array,
  options: { address: string; device: DeviceKeys },
): Promise<Opened> {
  let env: Record<string, unknown>;
  try {
    env = BSON.deserialize(bytes, { promoteBuffers: true }) as Record<
      string,
      unknown
    >;
  } catch {
    throw new E2eError("malformed", "the encrypted message cannot be read");
  }
  if (env.v !== ENVELOPE_VERSION || !Array.isArray(env.recipients)) {
    throw new E2eError("malformed", "unknown encrypted message format");
  }
  const mine = (env.recipients as {
    address: string;
    key_id: string;
    enc: Uint8Array;
    sealed_key: Uint8Array;
  }[])
    .find((r) =>
      r.address === options.address && r.key_id === options.device.keyId
    );
  if (!mine) {
    throw new E2eError(
      "not_a_recipient",
      "this device is not among the message's recipients",
    );
  }
  let contentKey: Uint8Array;
  try {
    const privateKey = await crypto.subtle.importKey(
      "pkcs8",
      buf(options.device.encryptPrivate),
      { name: "X25519" },
      true,
      [
        "deriveBits",
      ],
    );
    const recipient = await hpke().createRecipientContext({
      recipientKey: privateKey,
      enc: buf(mine.enc),
      info: HPKE_INFO,
    });
    contentKey = new Uint8Array(
      await recipient.open(
        buf(mine.sealed_key),
        buf(new TextEncoder().encode(`${mine.address}\n${mine.key_id}`)),
      ),
    );
  } catch {
    throw new E2eError(
      "tampered",
      "the sealed key does not open: the message was changed or is not for this device",
    );
  }
  let content: SecretContent;
  try {
    const aesKey = await crypto.subtle.importKey(
      "raw",
      buf(contentKey),
      "AES-GCM",
      false,
      ["decrypt"],
    );
    const plain = await crypto.subtle.decrypt(
      { name: "AES-GCM", iv: buf(env.nonce as Uint8Array) },
      aesKey,
      buf(env.ciphertext as Uint8Array),
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
  let signatureValid = false;
  try {
    const verifyKey = await crypto.subtle.importKey(
      "raw",
      buf(env.sender_sign as Uint8Array),
      ED,
      false,
      ["verify"],
    );
    signatureValid = await crypto.subtle.verify(
      ED,
      verifyKey,
      buf(env.signature as Uint8Array),
      buf(await digest(signedPart(env))),
    );
  } catch {
    signatureValid = false;
  }
  return {
    content,
    sender: String(env.sender),
    senderDevice: {
      key_id: String(env.sender_key_id),
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
  const key = await crypto.subtle.importKey(
    "raw",
    buf(contentKey),
    "AES-GCM",
    false,
    ["encrypt"],
  );
  const nonce = crypto.getRandomValues(new Uint8Array(12));
  return {
    nonce,
    data: new Uint8Array(
      await crypto.subtle.encrypt(
        { name: "AES-GCM", iv: nonce },
        key,
        buf(data),
      ),
    ),
  };
}

/** Decrypt attachment bytes; throws {@link E2eError} when changed. */
export async function decryptAttachment(
  contentKey: Uint8Array,
  nonce: Uint8Array,
  data: Uint8Array,
): Promise<Uint8Array> {
  try {
    const key = await crypto.subtle.importKey(
      "raw",
      buf(contentKey),
      "AES-GCM",
      false,
      ["decrypt"],
    );
    return new Uint8Array(
      await crypto.subtle.decrypt(
        { name: "AES-GCM", iv: buf(nonce) },
        key,
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

/** What a client remembers of its correspondents' signing keys (trust on first use). */
export interface TrustStore {
  /** Signing keys seen for an address (base64), with whether the user confirmed them. */
  get(address: string): Promise<{ key: string; confirmed: boolean }[]>;
  /** Remember keys for an address. */
  set(
    address: string,
    keys: { key: string; confirmed: boolean }[],
  ): Promise<void>;
}

/** How a sender's signing key compares with what the client knew. */
export type KeyTrust =
  | "confirmed"
  | "first-use"
  | "known"
  | "changed"
  | "unpublished";

function b64(bytes: Uint8Array): string {
  return btoa(String.fromCharCode(...bytes));
}

/**
 * Judge the signing key of an opened message: is it one the sender publishes,
 * and is it one this client saw before? A new key of a known correspondent is
 * reported as `changed` (until confirmed).
 */
export async function judgeSender(
  opened: Opened,
  published: PublishedDevice[],
  trust: TrustStore,
): Promise<KeyTrust> {
  const key = b64(opened.senderDevice.sign);
  if (!published.some((d) => b64(d.sign) === key)) return "unpublished";
  const known = await trust.get(opened.sender);
  const entry = known.find((k) => k.key === key);
  if (entry) return entry.confirmed ? "confirmed" : "known";
  await trust.set(opened.sender, [...known, { key, confirmed: false }]);
  return known.length === 0 ? "first-use" : "changed";
}

/** A trust store in memory (tests, short-lived clients). */
export class MemoryTrustStore implements TrustStore {
  readonly #map = new Map<string, { key: string; confirmed: boolean }[]>();

  /** Keys of an address. */
  get(address: string): Promise<{ key: string; confirmed: boolean }[]> {
    return Promise.resolve([...(this.#map.get(address) ?? [])]);
  }

  /** Remember keys. */
  set(
    address: string,
    keys: { key: string; confirmed: boolean }[],
  ): Promise<void> {
    this.#map.set(address, keys);
    return Promise.resolve();
  }
}
