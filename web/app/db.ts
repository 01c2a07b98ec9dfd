/// <reference lib="dom" />
/**
 * What the app keeps in this browser (IndexedDB): each account's keys — login
 * key, device keys, master key, as non-extractable Web Crypto keys where the
 * algorithm allows (their bytes cannot be read, not even by this page) — its
 * last token, its pinned contacts and seen message ids (the trust store of
 * PROTOCOL.md §16.1), drafts, and recently read messages for offline reading.
 *
 * @module
 */

import { type DBSchema, type IDBPDatabase, openDB } from "idb";
import type { ContactRecord } from "../../client/e2e.ts";

/** A login key as stored. */
export interface StoredLoginKey {
  /** `Ed25519`, `HPKE-X25519` or `RSA-OAEP-256`. */
  algorithm: "Ed25519" | "HPKE-X25519" | "RSA-OAEP-256";
  /** Key id (PROTOCOL.md §7.1). */
  keyId: string;
  /** The private key. */
  privateKey: CryptoKey;
  /** The public key (HPKE needs it for a non-extractable X25519 key). */
  publicKey?: CryptoKey;
  /** SubjectPublicKeyInfo DER. */
  spki: Uint8Array;
}

/** A user account this browser holds keys of. */
export interface StoredAccount {
  /** The address. */
  address: string;
  /** The login key. */
  login: StoredLoginKey;
  /** This device's end-to-end keys (after set-up). */
  device?: {
    label: string;
    id: string;
    encryptPrivate: CryptoKey;
    encryptPublic: Uint8Array;
    signPrivate: CryptoKey;
    signPublic: Uint8Array;
  };
  /** The account's master key, when this browser holds it. */
  master?: { private: CryptoKey; public: Uint8Array };
  /** The last token and its expiry (used again until refused). */
  token?: string;
  /** When it was added here. */
  added: Date;
}

/** An admin key this browser keeps (only when the admin chose to). */
export interface StoredAdmin {
  /** Admin name. */
  name: string;
  /** The login key. */
  login: StoredLoginKey;
}

/** A draft. */
export interface Draft {
  /** Random id. */
  id: string;
  /** Whose. */
  account: string;
  to: string;
  cc: string;
  bcc: string;
  subject: string;
  body: string;
  /** The copy answered. */
  inReplyTo?: string;
  /** Files chosen (kept as blobs). */
  files: { name: string; type: string; data: Blob }[];
  /** Last change. */
  updated: Date;
}

interface Schema extends DBSchema {
  accounts: { key: string; value: StoredAccount };
  admins: { key: string; value: StoredAdmin };
  contacts: { key: string; value: ContactRecord };
  seen: { key: string; value: string };
  drafts: { key: string; value: Draft; indexes: { account: string } };
  messages: {
    key: string;
    value: { key: string; account: string; read: Date; copy: unknown };
    indexes: { account: string };
  };
  subjects: { key: string; value: { subject: string; preview: string } };
}

let opening: Promise<IDBPDatabase<Schema>> | undefined;

/** The database (opened once). */
export function db(): Promise<IDBPDatabase<Schema>> {
  opening ??= openDB<Schema>("amtp", 1, {
    upgrade(database) {
      database.createObjectStore("accounts", { keyPath: "address" });
      database.createObjectStore("admins", { keyPath: "name" });
      database.createObjectStore("contacts");
      database.createObjectStore("seen");
      database.createObjectStore("drafts", { keyPath: "id" })
        .createIndex("account", "account");
      database.createObjectStore("messages", { keyPath: "key" })
        .createIndex("account", "account");
      database.createObjectStore("subjects");
    },
  });
  return opening;
}

/** Messages kept for offline reading, per account. */
export const OFFLINE_KEEP = 200;

/** Keep a message read (its copy as the server gave it: encrypted stays encrypted). */
export async function keepForOffline(
  account: string,
  id: string,
  copy: unknown,
): Promise<void> {
  const d = await db();
  await d.put("messages", {
    key: `${account}|${id}`,
    account,
    read: new Date(),
    copy,
  });
  const all = await d.getAllFromIndex("messages", "account", account);
  if (all.length > OFFLINE_KEEP) {
    all.sort((a, b) => a.read.getTime() - b.read.getTime());
    for (const old of all.slice(0, all.length - OFFLINE_KEEP)) {
      await d.delete("messages", old.key);
    }
  }
}

/** The messages kept for offline reading, newest read first. */
export async function offlineMessages(
  account: string,
): Promise<{ key: string; read: Date; copy: unknown }[]> {
  const all = await (await db()).getAllFromIndex(
    "messages",
    "account",
    account,
  );
  return all.sort((a, b) => b.read.getTime() - a.read.getTime());
}
