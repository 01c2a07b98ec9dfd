/**
 * What federation keeps of other servers for a while: remote users'
 * profiles and other domains' delivery policies. Each value carries its own
 * time (Deno KV's expiry is lazy); the reader decides whether it is fresh.
 *
 * @module
 */

import { keys } from "./records.ts";

/** A remote user's public profile, as fetched. */
export interface CachedProfile {
  /** The profile. */
  profile: Record<string, unknown>;
  /** When it was fetched (epoch ms). */
  fetched: number;
}

/** Values of one kind, by name, kept for a while. */
export class KvCache<T> {
  readonly #kv: Deno.Kv;
  readonly #key: (name: string) => Deno.KvKey;

  /** Values under `key(name)` in `kv`. */
  constructor(kv: Deno.Kv, key: (name: string) => Deno.KvKey) {
    this.#kv = kv;
    this.#key = key;
  }

  /** The value kept for `name`, if any. */
  async get(name: string): Promise<T | undefined> {
    return (await this.#kv.get<T>(this.#key(name))).value ?? undefined;
  }

  /** Keep `value` for `name` (dropped by KV some time after `expireInMs`, if given). */
  async set(name: string, value: T, expireInMs?: number): Promise<void> {
    await this.#kv.set(
      this.#key(name),
      value,
      expireInMs === undefined ? undefined : { expireIn: expireInMs },
    );
  }
}

/** Remote users' profiles. */
export function profileCache(kv: Deno.Kv): KvCache<CachedProfile> {
  return new KvCache(kv, keys.profileCache);
}

/** Other domains' delivery policies (their shape is federation's). */
export function policyCache<T>(kv: Deno.Kv): KvCache<T> {
  return new KvCache(kv, keys.policyCache);
}
