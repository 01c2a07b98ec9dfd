/**
 * Delivery through the rules module (docs/PROTOCOL.md 13.4): before a
 * delivery is stored, the recipients' rules decide where it goes (a
 * synchronous call of the rules module's exported `rules_evaluate`: a
 * reject or a folder must be known before anything is written); once
 * stored, forwards are sent from here, and copies whose rules asked for a
 * vacation reply are announced with the event `message_delivered` (the
 * reply is an after-effect: the delivery does not wait for it).
 *
 * Concurrent deliveries share one call: those that arrive while a call is
 * out wait and go together in the next. When the rules module is absent or
 * fails, mail is delivered as if there were no rules (never lost).
 *
 * @module
 */

import type { ModuleContext } from "../../../workers/sdk/mod.ts";
import { SYSTEM_FOLDERS } from "./params.ts";
import { Mailbox } from "./mailbox.ts";

/** What a delivery is known by, for rules (the rules module's DeliveryFacts). */
export interface DeliveryFacts {
  /** The sender (From). */
  from: string;
  /** The envelope sender of an email ("" for a bounce). */
  mail_from?: string;
  /** Recipients. */
  to: string[];
  /** Copy recipients. */
  cc: string[];
  /** Subject. */
  subject: string;
  /** Bytes. */
  size: number;
  /** Attachments. */
  attachments: number;
  /** Header fields of an email (names lower-case). */
  headers: [string, string][];
  /** The SMTP gateway's results, for an email. */
  auth?: { spf: string; dkim: string; dmarc: string };
  /** For a forwarded message: its first sender, then each forwarder, in order. */
  forwarded: string[];
  /** `Auto-Submitted`, or "". */
  auto_submitted: string;
}

/** What one recipient's rules decided (absent fields: as without rules). */
export interface Decision {
  folder?: string;
  seen?: true;
  flagged?: true;
  reject?: string;
  forward?: string[];
  discard?: true;
  vacation?: unknown;
}

/** The module rules live in. */
const RULES = "rules";
/** Deliveries per call, at most (the rules module's bound). */
const BATCH = 500;

interface Waiting {
  deliveries: { facts: DeliveryFacts; owners: string[] };
  resolve: (decisions: (Decision | null)[]) => void;
}

let waiting: Waiting[] = [];
let calling = false;
let lastComplaint = -Infinity;

async function flush(ctx: ModuleContext): Promise<void> {
  calling = true;
  while (waiting.length) {
    const batch = waiting.slice(0, BATCH);
    waiting = waiting.slice(BATCH);
    let decisions: (Decision | null)[][] | undefined;
    try {
      // As the module itself (""): not on behalf of whoever sent.
      const answer = await ctx.modules.call(RULES, "rules_evaluate", {
        deliveries: batch.map((w) => w.deliveries),
      }, "") as { decisions?: unknown };
      if (Array.isArray(answer?.decisions)) {
        decisions = answer.decisions as (Decision | null)[][];
      }
    } catch (error) {
      if (performance.now() - lastComplaint > 60_000) {
        lastComplaint = performance.now();
        ctx.log("warn", "rules_unavailable", {
          error: String(error).slice(0, 200),
        });
      }
    }
    batch.forEach((w, i) => {
      const got = decisions?.[i];
      w.resolve(
        w.deliveries.owners.map((_, j) =>
          Array.isArray(got) && got[j] && typeof got[j] === "object"
            ? got[j]
            : null
        ),
      );
    });
  }
  calling = false;
}

/** The rules' decisions for a delivery to `owners`, by owner (owners without any left out). */
export async function decide(
  ctx: ModuleContext,
  facts: DeliveryFacts,
  owners: string[],
): Promise<Map<string, Decision>> {
  const out = new Map<string, Decision>();
  if (owners.length === 0) return out;
  const decisions = await new Promise<(Decision | null)[]>((resolve) => {
    waiting.push({ deliveries: { facts, owners }, resolve });
    if (!calling) flush(ctx);
  });
  owners.forEach((owner, i) => {
    const d = decisions[i];
    if (d) out.set(owner, d);
  });
  return out;
}

/** Where a decision puts a copy. */
export function placed(
  decision: Decision | undefined,
): { folder: string; seen: boolean; flagged: boolean } {
  const folder = typeof decision?.folder === "string" &&
      /^[a-z0-9][a-z0-9 _.-]{0,63}$/.test(decision.folder) &&
      decision.folder !== "sent"
    ? decision.folder
    : "inbox";
  return {
    folder,
    seen: decision?.seen === true,
    flagged: decision?.flagged === true,
  };
}

/** Make the folders decisions name that the owners do not have yet. */
export async function makeFolders(
  ctx: ModuleContext,
  decisions: Map<string, Decision>,
): Promise<void> {
  for (const [owner, d] of decisions) {
    const { folder } = placed(d);
    if ((SYSTEM_FOLDERS as readonly string[]).includes(folder)) continue;
    const mailbox = new Mailbox(ctx.storage, owner);
    if (!(await mailbox.hasFolder(folder))) {
      await mailbox.createFolder(folder).catch(() => {});
    }
  }
}

/** Owners whose copy is not stored: rejected (with the reason) or forwarded away. */
export function notKept(decisions: Map<string, Decision>): {
  rejected: Map<string, string>;
  dropped: Set<string>;
} {
  const rejected = new Map<string, string>();
  const dropped = new Set<string>();
  for (const [owner, d] of decisions) {
    if (typeof d.reject === "string") {
      rejected.set(owner, d.reject.slice(0, 500));
      dropped.add(owner);
    } else if (d.discard === true && d.forward?.length) dropped.add(owner);
  }
  return { rejected, dropped };
}

/** A stored delivery, for {@link afterDelivery}. */
export interface Delivered {
  /** What the rules saw. */
  facts: DeliveryFacts;
  /** The message's local id (forwards are idempotent by it). */
  messageId: string;
  /** Its subject and body, as forwarded. */
  subject: string;
  body: string | Uint8Array;
  format: string;
  /** The copy id stored for each owner (new copies only). */
  stored: Map<string, string>;
}

/** How a forward is sent: `send` as the owner (send.ts passes it, to keep imports one way). */
export type ForwardSender = (
  owner: string,
  forward: {
    to: string[];
    subject: string;
    body: string;
    format: string;
    client_id: string;
    forwarded: string[];
  },
) => Promise<unknown>;

/**
 * After a delivery is stored: send each owner's forwards (as the owner,
 * carrying the chain of forwarders, idempotent by message and owner), and
 * announce copies with a vacation rule (`message_delivered`).
 */
export async function afterDelivery(
  ctx: ModuleContext,
  decisions: Map<string, Decision>,
  delivered: Delivered,
  sendAs: ForwardSender,
): Promise<void> {
  const { facts } = delivered;
  for (const [owner, d] of decisions) {
    const copy = delivered.stored.get(owner);
    if (d.vacation && copy) {
      ctx.modules.emit("message_delivered", { owner, id: copy, facts });
    }
    // An encrypted body is for the owner's key only: it is not forwarded.
    if (!d.forward?.length || typeof delivered.body !== "string") continue;
    const html = delivered.format === "html";
    const note = `Forwarded by ${owner}; from ${facts.from}: ${facts.subject}`;
    try {
      await sendAs(owner, {
        to: d.forward.slice(0, 5),
        subject: delivered.subject,
        body: html
          ? `<p>${note.replace(/[<>&]/g, "")}</p>${delivered.body}`
          : `${note}\n\n${delivered.body}`,
        format: delivered.format,
        client_id: `forward ${delivered.messageId}`,
        // The chain: its first sender, then each forwarder.
        forwarded: [
          ...(facts.forwarded.length ? facts.forwarded : [facts.from]),
          owner,
        ].slice(-10),
      });
    } catch (error) {
      ctx.log("warn", "forward_failed", {
        owner,
        error: String(error).slice(0, 200),
      });
    }
  }
}
