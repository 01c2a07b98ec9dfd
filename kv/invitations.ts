/**
 * Invitations: one-time codes with an expiry that let a person's own device
 * register its public key, for a new account an admin prepared (`account`)
 * or as another login key of an existing one (`device`). Only the code's
 * SHA-256 is stored; the record is found by its first 16 hex digits (the
 * invitation's id) and the whole hash is compared.
 *
 * @module
 */

import { keys } from "./records.ts";

/** An invitation, stored under its id. */
export interface InvitationRecord {
  /** First 16 hex digits of the code's SHA-256 (what lists and deletions name). */
  id: string;
  /** SHA-256 of the code, hex (the code itself is never stored). */
  hash: string;
  /** `account`: creates the user; `device`: adds a login key to it. */
  kind: "account" | "device";
  /** The address the invitation is for. */
  address: string;
  /** Display name of a new account. */
  name: string;
  /** Quota of a new account in bytes (0: the server's default). */
  quota: number;
  /** Who made it: `admin:NAME` or `user:ADDRESS`. */
  created_by: string;
  /** When it was made. */
  created: Date;
  /** Epoch milliseconds after which it is refused (checked on every use). */
  expires: number;
}

/** Storage of invitations. */
export class InvitationStore {
  readonly #kv: Deno.Kv;

  /** Wrap an open KV. */
  constructor(kv: Deno.Kv) {
    this.#kv = kv;
  }

  /** Store a new invitation (with its index entry by address). */
  async put(record: InvitationRecord): Promise<void> {
    // KV's own expiry is a backstop (lazy); the record's expiry decides.
    const expireIn = Math.max(1000, record.expires - Date.now()) + 60_000;
    await this.#kv.atomic()
      .set(keys.invitation(record.id), record, { expireIn })
      .set(keys.invitationOf(record.address, record.id), record.created, {
        expireIn,
      })
      .commit();
  }

  /** The invitation of an id, or null. */
  async get(id: string): Promise<InvitationRecord | null> {
    return (await this.#kv.get<InvitationRecord>(keys.invitation(id))).value;
  }

  /**
   * Take an invitation for use: deleted in one atomic step with a check, so
   * two uses of one code cannot both succeed. False when it was gone.
   */
  async claim(id: string): Promise<InvitationRecord | null> {
    const entry = await this.#kv.get<InvitationRecord>(keys.invitation(id));
    if (!entry.value) return null;
    const result = await this.#kv.atomic()
      .check(entry)
      .delete(keys.invitation(id))
      .delete(keys.invitationOf(entry.value.address, id))
      .commit();
    return result.ok ? entry.value : null;
  }

  /** Delete an invitation; false when there was none. */
  async delete(id: string): Promise<boolean> {
    return (await this.claim(id)) !== null;
  }

  /** Live invitations (not expired), newest first; of one address when given. */
  async list(address?: string): Promise<InvitationRecord[]> {
    const now = Date.now();
    const out: InvitationRecord[] = [];
    if (address) {
      for await (
        const entry of this.#kv.list({ prefix: keys.invitationsOf(address) })
      ) {
        const record = await this.get(entry.key.at(-1) as string);
        if (record && record.expires > now) out.push(record);
      }
    } else {
      for await (
        const entry of this.#kv.list<InvitationRecord>({
          prefix: keys.invitations(),
        })
      ) {
        if (entry.value.expires > now) out.push(entry.value);
      }
    }
    return out.sort((a, b) => b.created.getTime() - a.created.getTime());
  }
}
