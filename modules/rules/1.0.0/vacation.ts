/**
 * Vacation replies (RFC 3834's rules): at most one per sender per N days,
 * and never to what must not be answered — a bounce, a list or bulk
 * message, an automatic message, a no-reply or system sender, oneself.
 *
 * @module
 */

import type { ModuleStorage } from "../../../workers/sdk/mod.ts";
import type { DeliveryFacts } from "./rules.ts";

/** Local parts that never get an automatic answer. */
const SYSTEM_SENDER =
  /^(no-?reply|do-?not-?reply|mailer-daemon|postmaster|bounces?|listserv|majordomo|owner-.*|.*-request|.*-bounces?)$/i;

/**
 * Why a message gets no vacation reply for `owner`, or undefined when it may
 * get one.
 */
export function noReplyReason(
  facts: DeliveryFacts,
  owner: string,
): string | undefined {
  const from = facts.from.toLowerCase();
  if (!from.includes("@")) return "no sender";
  if (from === owner.toLowerCase()) return "from oneself";
  if (facts.mail_from === "") return "a bounce";
  if (SYSTEM_SENDER.test(from.slice(0, from.lastIndexOf("@")))) {
    return "a system or no-reply sender";
  }
  if (facts.auto_submitted && facts.auto_submitted.toLowerCase() !== "no") {
    return "an automatic message";
  }
  const header = (name: string) =>
    facts.headers.filter(([n]) => n === name).map(([, v]) => v.toLowerCase());
  if (
    ["list-id", "list-unsubscribe", "list-post", "list-help"].some((n) =>
      header(n).length > 0
    )
  ) return "a list message";
  if (header("precedence").some((v) => /bulk|list|junk/.test(v))) {
    return "a bulk message";
  }
  if (header("auto-submitted").some((v) => v.trim() !== "no")) {
    return "an automatic message";
  }
  if (header("x-auto-response-suppress").length > 0) {
    return "asks for no automatic answer";
  }
  return undefined;
}

/**
 * Take the right to answer `sender` for `owner` now: true at most once per
 * `days` (an atomic check of the last answer's time), false otherwise.
 */
export async function takeTurn(
  storage: ModuleStorage,
  owner: string,
  sender: string,
  days: number,
  now: Date,
): Promise<boolean> {
  const key = ["vacation", owner, sender.toLowerCase().slice(0, 255)];
  const last = await storage.get<number>(key);
  if (last && now.getTime() - last.value < days * 86_400_000) return false;
  return await storage.atomic([
    { op: "check", key, versionstamp: last?.versionstamp ?? null },
    { op: "set", key, value: now.getTime() },
  ]);
}
