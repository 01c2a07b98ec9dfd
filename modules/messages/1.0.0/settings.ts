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

/** Largest value of {@link maxAttachmentFor}: 16 GiB. */
export const MAX_ATTACHMENT_CEILING = 16 * 1024 ** 3;

/**
 * Attachment limits above (or below) the default for some domains and users,
 * from `AMTP_MESSAGES_MAX_ATTACHMENT_FOR`: `name=bytes` pairs separated by
 * commas, each name a domain or an address (an address's own entry wins over
 * its domain's). Entries that do not parse are ignored.
 */
export function attachmentLimits(
  text = envText("AMTP_MESSAGES_MAX_ATTACHMENT_FOR"),
): Map<string, number> {
  const limits = new Map<string, number>();
  for (const entry of text.split(",")) {
    const at = entry.lastIndexOf("=");
    if (at <= 0) continue;
    const name = entry.slice(0, at).trim().toLowerCase();
    const value = Number(entry.slice(at + 1).trim());
    if (
      name && Number.isSafeInteger(value) && value > 0 &&
      value <= MAX_ATTACHMENT_CEILING
    ) limits.set(name, value);
  }
  return limits;
}

/** The largest attachment `address` may send or receive, bytes. */
export function maxAttachmentFor(
  address: string,
  fallback: number,
  limits = attachmentLimits(),
): number {
  const lower = address.toLowerCase();
  return limits.get(lower) ??
    limits.get(lower.slice(lower.lastIndexOf("@") + 1)) ?? fallback;
}

function envText(name: string): string {
  try {
    return Deno.env.get(name) ?? "";
  } catch {
    // No permission: nothing set.
    return "";
  }
}
