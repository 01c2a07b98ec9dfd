/**
 * What the server's admin sets for the messages module through the
 * environment (granted in module.json).
 *
 * @module
 */

import { DEFAULT_QUOTA } from "./mailbox.ts";

/** The mailbox quota of users without their own (`AMTP_MESSAGES_QUOTA`), bytes. */
export function quotaDefault(): number {
  try {
    const value = Number(Deno.env.get("AMTP_MESSAGES_QUOTA"));
    if (Number.isInteger(value) && value > 0) return value;
  } catch {
    // No permission: the default.
  }
  return DEFAULT_QUOTA;
}
