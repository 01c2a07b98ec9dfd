/**
 * Invitation commands for admins (PROTOCOL.md §9.1):
 * `admin_add_invitation`, `admin_get_invitations`, `admin_del_invitation`.
 *
 * @module
 */

import {
  accountName,
  createInvitation,
  EXPIRES_PARAM,
  formatCode,
  invitationView,
} from "../auth/mod.ts";
import { splitAddress } from "../../shared/identity.ts";
import {
  type Command,
  defineCommand,
  ErrorCode,
  ProtocolError,
} from "../protocol/mod.ts";
import type { AdminDeps } from "./common.ts";
import { exists, notFound } from "./records.ts";

/** The link that opens the web app on an invitation, when the app is served. */
export function invitationLink(
  webUrl: string | undefined,
  code: string,
): string | undefined {
  return webUrl ? `${webUrl}#invite=${formatCode(code)}` : undefined;
}

/** The admin commands on invitations. */
export function invitationAdminCommands(deps: AdminDeps): Command[] {
  const { accounts, invitations } = deps;
  return [
    defineCommand({
      name: "admin_add_invitation",
      auth: "admin",
      params: {
        address: { type: "string", max: 320 },
        name: { type: "string", optional: true, max: 128 },
        quota: { type: "int", optional: true, min: 0 },
        ...EXPIRES_PARAM,
      },
      handler: async (p, ctx) => {
        const address = accountName("user", p.address);
        const domain = splitAddress(address)[1];
        if (!(await accounts.getDomain(domain))) {
          throw new ProtocolError(
            ErrorCode.UNKNOWN_DOMAIN,
            `domain ${domain} is not hosted here: add it first`,
          );
        }
        if (
          (await accounts.getUser(address)) ||
          (await accounts.getAlias(address))
        ) throw exists("address", address);
        // An address has one open account invitation: a new one (the
        // first link was lost, or went to the wrong person) withdraws the
        // earlier ones, so no stale code stays usable.
        const replaced: string[] = [];
        for (const earlier of await invitations.list(address)) {
          if (
            earlier.kind === "account" && (await invitations.delete(earlier.id))
          ) replaced.push(earlier.id);
        }
        const { code, record } = await createInvitation(invitations, {
          kind: "account",
          address,
          name: p.name,
          quota: p.quota,
          createdBy: `admin:${ctx.caller!.name}`,
          expiresIn: p.expires_in,
          now: deps.now?.(),
        });
        ctx.log.info("invitation_added", {
          address,
          id: record.id,
          replaced: replaced.join(",") || undefined,
        });
        return {
          code: formatCode(code),
          link: invitationLink(deps.webUrl?.(), code),
          invitation: invitationView(record),
          replaced,
        };
      },
    }),
    defineCommand({
      name: "admin_get_invitations",
      auth: "admin",
      params: { address: { type: "string", optional: true, max: 320 } },
      handler: async (p) => ({
        invitations: (await invitations.list(
          p.address ? accountName("user", p.address) : undefined,
        )).map(invitationView),
      }),
    }),
    defineCommand({
      name: "admin_del_invitation",
      auth: "admin",
      params: { id: { type: "string", min: 16, max: 16 } },
      handler: async (p, ctx) => {
        if (!(await invitations.delete(p.id))) {
          throw notFound("invitation", p.id);
        }
        ctx.log.info("invitation_deleted", { id: p.id });
        return { id: p.id };
      },
    }),
  ];
}
