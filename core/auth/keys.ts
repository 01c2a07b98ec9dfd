/**
 * Turning key parameters into stored login keys.
 *
 * @module
 */

import type { KeyRecord } from "../../kv/mod.ts";
import { ErrorCode, ProtocolError } from "../protocol/mod.ts";
import {
  importLoginPublicKey,
  KeyError,
  keyId,
} from "../../shared/login/algorithms.ts";

/** Login keys one account may hold. */
export const MAX_KEYS = 16;

/** Parameter schema of a key given to a command. */
export const KEY_PARAMS = {
  algorithm: { type: "string", max: 32 },
  public_key: { type: "binary", min: 32, max: 2048 },
  key_label: { type: "string", optional: true, max: 64 },
} as const;

/**
 * Validate a public key and build its record.
 *
 * @throws {ProtocolError} UNSUPPORTED_ALGORITHM or INVALID_KEY
 */
export async function makeKeyRecord(
  algorithm: string,
  publicKey: Uint8Array,
  label?: string,
): Promise<KeyRecord> {
  try {
    await importLoginPublicKey(algorithm, publicKey);
  } catch (error) {
    if (error instanceof KeyError) {
      throw new ProtocolError(
        error.code === "unsupported_algorithm"
          ? ErrorCode.UNSUPPORTED_ALGORITHM
          : ErrorCode.INVALID_KEY,
        error.message,
      );
    }
    throw error;
  }
  return {
    id: await keyId(publicKey),
    label: label ?? "",
    algorithm: algorithm as KeyRecord["algorithm"],
    public_key: publicKey,
    created: new Date(),
  };
}

/**
 * Add a key to a list, refusing duplicates and more than {@link MAX_KEYS}.
 *
 * @throws {ProtocolError} ALREADY_EXISTS or LIMIT_EXCEEDED
 */
export function addKey(keys: KeyRecord[], key: KeyRecord): KeyRecord[] {
  if (keys.some((k) => k.id === key.id)) {
    throw new ProtocolError(
      ErrorCode.ALREADY_EXISTS,
      `key ${key.id} is already registered`,
    );
  }
  if (keys.length >= MAX_KEYS) {
    throw new ProtocolError(
      ErrorCode.LIMIT_EXCEEDED,
      `an account holds at most ${MAX_KEYS} keys`,
    );
  }
  return [...keys, key];
}

/**
 * Remove a key by id; the last key cannot go (the account could never log in).
 *
 * @throws {ProtocolError} NOT_FOUND or LAST_ADMIN
 */
export function removeKey(keys: KeyRecord[], id: string): KeyRecord[] {
  if (!keys.some((k) => k.id === id)) {
    throw new ProtocolError(ErrorCode.NOT_FOUND, `no key with id ${id}`);
  }
  if (keys.length === 1) {
    throw new ProtocolError(
      ErrorCode.LAST_ADMIN,
      "the last key of an account cannot be removed: add another first",
    );
  }
  return keys.filter((k) => k.id !== id);
}

/** The public view of a key (what lists return). */
export function keyView(key: KeyRecord): Record<string, unknown> {
  return {
    key_id: key.id,
    label: key.label,
    algorithm: key.algorithm,
    public_key: key.public_key,
    created: key.created,
  };
}
