/**
 * Commands the messages module exports to other modules (its manifest's
 * `exports`; no client may call them): what the rules module needs.
 *
 * - `message_facts`: the facts rules see of a stored copy, from the mailbox
 *   of the user on whose behalf the calling module calls (the core set that
 *   user: a module serving no user's call gets none).
 * - `auto_reply`: a vacation reply from `owner` to the sender of one of the
 *   owner's copies, marked `auto-replied`, once per copy; only to a real
 *   sender of a copy in that mailbox, never to an automatic message or a
 *   bounce, so a module granted it cannot send anything else as anyone.
 *
 * @module
 */

import { type ModuleContext, ModuleError } from "../../../workers/sdk/mod.ts";
import { readBlob } from "./attachments.ts";
import { Mailbox, type MessageRecord } from "./mailbox.ts";
import { parseEmail } from "./mime.ts";
import { type Params, str } from "./params.ts";
import type { DeliveryFacts } from "./rules.ts";
import { send } from "./send.ts";
import { quotaDefault } from "./settings.ts";

function fromModule(ctx: ModuleContext): void {
  if (!ctx.caller.module) {
    throw new ModuleError("forbidden", "for other modules only");
  }
}

async function copyOf(
  ctx: ModuleContext,
  owner: string,
  id: string,
): Promise<MessageRecord> {
  const entry = await new Mailbox(ctx.storage, owner).message(id);
  if (!entry) throw new ModuleError("not_found", `no message ${id}`);
  return entry.value;
}

/** `message_facts`: a stored copy as rules see a delivery. */
export async function messageFacts(
  p: Params,
  ctx: ModuleContext,
): Promise<DeliveryFacts> {
  fromModule(ctx);
  if (!ctx.caller.address) {
    throw new ModuleError("forbidden", "only on behalf of a user");
  }
  const m = await copyOf(ctx, ctx.caller.address, str(p, "id", 64));
  const email = m.email;
  const headers = email
    ? (await parseEmail(await readBlob(ctx.storage, email.source))).headers
    : [];
  const auth = email?.auth;
  return {
    from: m.from,
    ...(email?.mail_from !== undefined ? { mail_from: email.mail_from } : {}),
    to: m.to,
    cc: m.cc,
    subject: m.subject,
    size: m.size,
    attachments: m.attachments.filter((a) => !a.inline).length,
    headers,
    ...(auth
      ? {
        auth: {
          spf: auth.spf.result,
          dkim: auth.dkim.find((d) => d.result === "pass")?.result ??
            auth.dkim[0]?.result ?? "none",
          dmarc: auth.dmarc.result,
        },
      }
      : {}),
    forwarded: m.forwarded ?? [],
    auto_submitted: m.auto_submitted ??
      headers.find(([n]) => n === "auto-submitted")?.[1] ?? "",
  };
}

/** `auto_reply`: a vacation reply to the sender of one of `owner`'s copies. */
export async function autoReply(
  p: Params,
  ctx: ModuleContext,
): Promise<unknown> {
  fromModule(ctx);
  const owner = str(p, "owner", 320);
  const m = await copyOf(ctx, owner, str(p, "id", 64));
  const to = m.from.toLowerCase();
  if (
    !to.includes("@") || to === owner.toLowerCase() ||
    (m.auto_submitted ?? "") !== "" || m.email?.mail_from === ""
  ) {
    throw new ModuleError(
      "forbidden",
      "no automatic reply to this message (automatic, a bounce, or from oneself)",
    );
  }
  const result = await send(
    {
      to: [to],
      cc: [],
      bcc: [],
      subject: str(p, "subject", 200),
      body: str(p, "body", 4000),
      format: "text",
      attachments: [],
      in_reply_to: m.id,
      client_id: `auto reply ${m.id}`,
      encrypted: false,
      auto_submitted: "auto-replied",
    },
    { ...ctx, caller: { address: owner, session: "rules" } },
    quotaDefault(),
  );
  return { message_id: result.message_id, recipients: result.recipients };
}
