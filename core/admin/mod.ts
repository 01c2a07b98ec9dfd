/**
 * Admin commands (`admin_*`): system information, logout, login blocks, the
 * domain, user, alias, catch-all and admin commands, and invitations.
 *
 * @module
 */

import {
  type Command,
  defineCommand,
  ErrorCode,
  ProtocolError,
} from "../protocol/mod.ts";
import { FAILURE_SCOPES } from "../auth/mod.ts";
import { adminAccountCommands } from "./admins.ts";
import { aliasCommands } from "./aliases.ts";
import type { AdminDeps } from "./common.ts";
import { domainCommands } from "./domains.ts";
import { systemInfo } from "./sysinfo.ts";
import { userAdminCommands } from "./users.ts";
import { invitationAdminCommands } from "./invitations.ts";

export type { AdminDeps } from "./common.ts";

/** Every admin command except the login pair (see core/auth). */
export function adminCommands(deps: AdminDeps): Command[] {
  return [
    defineCommand({
      name: "admin_sysinfo",
      auth: "admin",
      params: {},
      handler: () => systemInfo(deps.startedAt),
    }),
    defineCommand({
      name: "admin_logout",
      auth: "admin",
      params: {},
      handler: async (_p, ctx) => {
        await deps.tokens.revoke(ctx.caller!.tokenHash);
        return { logged_out: true };
      },
    }),
    defineCommand({
      name: "admin_get_blocks",
      auth: "admin",
      params: {},
      handler: async () => {
        const now = Date.now();
        const blocks = (await deps.login.blocks()).map((b) => ({
          scope: b.scope,
          id: b.id,
          failures: b.failures,
          blocked: b.blocked_until > now,
          retry_after: Math.max(0, Math.ceil((b.blocked_until - now) / 1000)),
          last: b.last,
        }));
        return { blocks };
      },
    }),
    defineCommand({
      name: "admin_del_block",
      auth: "admin",
      params: {
        scope: { type: "string", max: 16 },
        id: { type: "string", max: 400 },
      },
      handler: async (p) => {
        const scope = FAILURE_SCOPES.find((s) => s === p.scope);
        if (!scope) {
          throw new ProtocolError(
            ErrorCode.INVALID_PARAMETER,
            `parameter "scope" must be one of ${FAILURE_SCOPES.join(", ")}`,
            { parameter: "scope" },
          );
        }
        if (!(await deps.login.unblock(scope, p.id))) {
          throw new ProtocolError(ErrorCode.NOT_FOUND, `no block for ${p.id}`);
        }
        return { scope: p.scope, id: p.id };
      },
    }),
    ...domainCommands(deps),
    ...userAdminCommands(deps),
    ...aliasCommands(deps),
    ...adminAccountCommands(deps),
    ...invitationAdminCommands(deps),
  ];
}
