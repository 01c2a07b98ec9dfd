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

/** Default of {@link blobExpiry}: 7 days, above the federation queue's 5-day lifetime. */
export const BLOB_EXPIRY = 7 * 24 * 3600 * 1000;

/**
 * Milliseconds an unfinished upload or transfer, or a stored attachment no
 * message refers to, is kept (`AMTP_MESSAGES_BLOB_EXPIRY`, seconds; default
 * 7 days: keep it above `AMTP_FEDERATION_LIFETIME`, the time a queued
 * delivery may still need a sent message's attachments).
 */
export function blobExpiry(): number {
  const value = Number(envText("AMTP_MESSAGES_BLOB_EXPIRY"));
  return Number.isInteger(value) && value > 0 ? value * 1000 : BLOB_EXPIRY;
}

/** Milliseconds between sweeps: half the expiry, at least 1 s, at most 1 h. */
export function sweepInterval(expiryMs: number): number {
  return Math.min(3600_000, Math.max(1000, Math.floor(expiryMs / 2)));
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
