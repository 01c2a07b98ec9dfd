/// <reference lib="dom" />
/**
 * Keys in the browser: login keys made here (Ed25519, the default of
 * PROTOCOL.md §7.1) or imported from a key file, the end-to-end device and
 * master keys, all stored non-extractable; the one-time backup file (made
 * while the new keys' bytes are still in memory, before they are stored);
 * and the trust store (pinned contacts, seen message ids) in IndexedDB.
 *
 * @module
 */

import type { LoginKey } from "../../client/mod.ts";
import {
  b64,
  type ContactRecord,
  type MasterKeys,
  type TrustStore,
} from "../../client/e2e.ts";
import { importLoginPrivateKey, keyId } from "../../shared/login/algorithms.ts";
import { toPem } from "../../shared/pem.ts";
import { db, type StoredAccount, type StoredLoginKey } from "./db.ts";

function buf(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(bytes) as Uint8Array<ArrayBuffer>;
}

/** The label of the master key's block in a backup file. */
const MASTER_LABEL = "AMTP MASTER KEY";

/** A key just made or read, with its bytes (for the backup) until stored. */
export interface FreshLoginKey {
  /** What is stored (non-extractable). */
  stored: StoredLoginKey;
  /** PKCS#8 bytes, only in memory, for the backup file. */
  pkcs8: Uint8Array;
}

/** Re-import PKCS#8 bytes as a key nobody can read out again. */
async function sealed(
  algorithm: StoredLoginKey["algorithm"],
  pkcs8: Uint8Array,
): Promise<CryptoKey> {
  if (algorithm === "RSA-OAEP-256") {
    return await crypto.subtle.importKey(
      "pkcs8",
      buf(pkcs8),
      { name: "RSA-OAEP", hash: "SHA-256" },
      false,
      ["decrypt"],
    );
  }
  const name = algorithm === "Ed25519" ? "Ed25519" : "X25519";
  return await crypto.subtle.importKey(
    "pkcs8",
    buf(pkcs8),
    { name },
    false,
    name === "Ed25519" ? ["sign"] : ["deriveBits"],
  );
}

/** A new Ed25519 login key. */
export async function newLoginKey(): Promise<FreshLoginKey> {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const pkcs8 = new Uint8Array(
    await crypto.subtle.exportKey("pkcs8", pair.privateKey),
  );
  const spki = new Uint8Array(
    await crypto.subtle.exportKey("spki", pair.publicKey),
  );
  return {
    pkcs8,
    stored: {
      algorithm: "Ed25519",
      keyId: await keyId(spki),
      privateKey: await sealed("Ed25519", pkcs8),
      spki,
    },
  };
}

/** PEM blocks of a text, by label. */
function blocks(text: string): Map<string, Uint8Array> {
  const out = new Map<string, Uint8Array>();
  for (
    const m of text.matchAll(
      /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g,
    )
  ) {
    if (!out.has(m[1])) {
      out.set(
        m[1],
        Uint8Array.from(atob(m[2].replace(/\s+/g, "")), (c) => c.charCodeAt(0)),
      );
    }
  }
  return out;
}

/** A key file read: the login key, and the master key when it is a backup of this app. */
export interface ImportedKeys {
  /** The login key. */
  login: FreshLoginKey;
  /** The master key (stored non-extractable). */
  master?: MasterKeys;
}

/**
 * Read a key file: a private key (PEM PKCS#8, PROTOCOL.md §7.8: a key made
 * by `amtp keygen`, the first admin's key) or a backup of this app.
 *
 * @throws {Error} when it holds no private key this app can use
 */
export async function readKeyFile(text: string): Promise<ImportedKeys> {
  const found = blocks(text);
  const pkcs8 = found.get("PRIVATE KEY");
  if (!pkcs8) {
    throw new Error("the file holds no private key (BEGIN PRIVATE KEY)");
  }
  const loaded = await importLoginPrivateKey(pkcs8);
  const publicKey = loaded.algorithm === "HPKE-X25519"
    ? await crypto.subtle.importKey(
      "spki",
      buf(loaded.publicKey),
      { name: "X25519" },
      true,
      [],
    )
    : undefined;
  const login: FreshLoginKey = {
    pkcs8,
    stored: {
      algorithm: loaded.algorithm,
      keyId: await keyId(loaded.publicKey),
      privateKey: await sealed(loaded.algorithm, pkcs8),
      publicKey,
      spki: loaded.publicKey,
    },
  };
  const masterBytes = found.get(MASTER_LABEL);
  let master: MasterKeys | undefined;
  if (masterBytes) {
    const readable = await crypto.subtle.importKey(
      "pkcs8",
      buf(masterBytes),
      { name: "Ed25519" },
      true,
      ["sign"],
    );
    const jwk = await crypto.subtle.exportKey("jwk", readable);
    const raw = Uint8Array.from(
      atob(jwk.x!.replace(/-/g, "+").replace(/_/g, "/")),
      (c) => c.charCodeAt(0),
    );
    master = {
      private: await crypto.subtle.importKey(
        "pkcs8",
        buf(masterBytes),
        { name: "Ed25519" },
        false,
        ["sign"],
      ),
      public: raw,
    };
  }
  return { login, master };
}

/** A new master key: its bytes for the backup, and the key as stored. */
export async function newMasterKey(): Promise<
  { master: MasterKeys; pkcs8: Uint8Array }
> {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, [
    "sign",
    "verify",
  ]) as CryptoKeyPair;
  const pkcs8 = new Uint8Array(
    await crypto.subtle.exportKey("pkcs8", pair.privateKey),
  );
  return {
    pkcs8,
    master: {
      private: await crypto.subtle.importKey(
        "pkcs8",
        buf(pkcs8),
        { name: "Ed25519" },
        false,
        ["sign"],
      ),
      public: new Uint8Array(
        await crypto.subtle.exportKey("raw", pair.publicKey),
      ),
    },
  };
}

/**
 * The backup file: the login key first (any AMTP client reads it: `amtp
 * login --key FILE`), then the master key, under a warning.
 */
export function backupText(
  address: string,
  login: Uint8Array,
  master?: Uint8Array,
): string {
  return [
    `AMTP key backup of ${address}, made ${new Date().toISOString()}`,
    "",
    "KEEP THIS FILE SECRET AND SAFE. Whoever has it can sign in as you and,",
    "with the master key below, approve new devices that read your mail.",
    "It is not encrypted: store it offline or in a password manager.",
    "",
    toPem("PRIVATE KEY", login).trim(),
    ...(master ? ["", toPem(MASTER_LABEL, master).trim()] : []),
    "",
  ].join("\n");
}

/** The stored login key as the client library takes it. */
export function loginKeyOf(stored: StoredLoginKey): LoginKey {
  return {
    algorithm: stored.algorithm,
    privateKey: stored.privateKey,
    hpkePublicKey: stored.publicKey,
    keyId: stored.keyId,
  };
}

/** Pinned contacts and seen message ids of one account, in IndexedDB. */
export class BrowserTrustStore implements TrustStore {
  readonly #account: string;
  readonly #ownMaster: () => Uint8Array | undefined;

  /**
   * The store of `account`; `ownMaster` gives the account's master public
   * key when this browser holds the master key (then the account's own
   * master is known for certain, not trusted on first use).
   */
  constructor(account: string, ownMaster: () => Uint8Array | undefined) {
    this.#account = account;
    this.#ownMaster = ownMaster;
  }

  /** The record of an address. */
  async get(address: string): Promise<ContactRecord | undefined> {
    const record: ContactRecord | undefined = await (await db()).get(
      "contacts",
      `${this.#account}|${address}`,
    );
    const own = address === this.#account ? this.#ownMaster() : undefined;
    if (!own) return record;
    const master = b64(own);
    if (record && record.master !== master) return record;
    return { master, counter: record?.counter ?? 0, confirmed: true };
  }

  /** Replace a record. */
  async set(address: string, record: ContactRecord): Promise<void> {
    await (await db()).put("contacts", record, `${this.#account}|${address}`);
  }

  /** Remember a message id; answers the copy it first arrived as. */
  async seen(sender: string, messageId: string, copy: string): Promise<string> {
    const d = await db();
    const key = `${this.#account}|${sender}\n${messageId}`;
    const first = await d.get("seen", key);
    if (first) return first;
    await d.put("seen", copy, key);
    return copy;
  }

  /** Every pinned contact. */
  async all(): Promise<{ address: string; record: ContactRecord }[]> {
    const d = await db();
    const prefix = `${this.#account}|`;
    const range = IDBKeyRange.bound(prefix, `${prefix}\uffff`);
    const keys = await d.getAllKeys("contacts", range);
    const values = await d.getAll("contacts", range);
    return keys.map((k, i) => ({
      address: String(k).slice(prefix.length),
      record: values[i],
    })).filter((contact) => contact.address !== this.#account);
  }
}

/** Save an account's keys in this browser. */
export async function saveAccount(account: StoredAccount): Promise<void> {
  await (await db()).put("accounts", account);
}

/** The accounts this browser holds keys of. */
export async function storedAccounts(): Promise<StoredAccount[]> {
  return await (await db()).getAll("accounts");
}
