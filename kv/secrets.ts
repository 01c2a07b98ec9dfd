/**
 * Values the server creates once and keeps for good in the core database
 * (shared by every server process): the login secret, decoy keys.
 *
 * @module
 */

import { keys } from "./records.ts";

/**
 * The value at `key`, created by `make` when there is none. Two processes
 * starting at once agree: the first commit wins and the other reads it.
 */
export async function getOrCreate<T>(
  kv: Deno.Kv,
  key: Deno.KvKey,
  make: () => T | Promise<T>,
): Promise<T> {
  for (;;) {
    const entry = await kv.get<T>(key);
    if (entry.value !== null) return entry.value;
    const value = await make();
    const result = await kv.atomic().check(entry).set(key, value).commit();
    if (result.ok) return value;
  }
}

/** A named 32-byte server secret, created on first use. */
export function serverSecret(kv: Deno.Kv, name: string): Promise<Uint8Array> {
  return getOrCreate(
    kv,
    keys.secret(name),
    () => crypto.getRandomValues(new Uint8Array(32)),
  );
}
