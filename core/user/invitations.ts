/**
 * Invitations from the invited person's side (PROTOCOL.md §8.1, §10.1):
 * `invitation_info` and `invitation_accept` need no login (the code is the
 * proof); `user_add_invitation`, `user_get_invitations` and
 * `user_del_invitation` let a user invite another device of their own.
 *
 * @module
 */

import {
  createInvitation,
  EXPIRES_PARAM,
  findInvitation,
  formatCode,
  invitationView,
  KEY_PARAMS,
  MAX_DEVICE_INVITATIONS,
  redeemInvitation,
} from "../auth/mod.ts";
import {
  type Command,
  defineCommand,
  ErrorCode,
  ProtocolError,
} from "../protocol/mod.ts";
import type { UserDeps } from "./mod.ts";

const CODE_PARAM = { code: { type: "string", min: 1, max: 64 } } as const;

/** The link that opens the web app on an invitation, when the app is served. */
function linkOf(deps: UserDeps, code: string): string | undefined {
  const web = deps.webUrl?.();
  return web ? `${web}#invite=${formatCode(code)}` : undefined;
}

/** The invitation commands of users and invited people. */
export function invitationUserCommands(deps: UserDeps): Command[] {
  const { invitations, accounts } = deps;
  const now = deps.now ?? Date.now;
  // Wrong codes count against their source as failed logins do.
  const guarded = <T>(remoteAddr: string, attempt: () => Promise<T>) =>
    deps.login ? deps.login.tryCode(remoteAddr, attempt) : attempt();
  return [
    defineCommand({
      name: "invitation_info",
      auth: "none",
      params: CODE_PARAM,
      handler: async (p, ctx) => {
        const found = await guarded(
          ctx.session.remoteAddr,
          () => findInvitation(invitations, p.code, now()),
        );
        return {
          kind: found.kind,
          address: found.address,
          name: found.name,
          expires: new Date(found.expires),
        };
      },
    }),
    defineCommand({
      name: "invitation_accept",
      auth: "none",
      params: {
        ...CODE_PARAM,
        ...KEY_PARAMS,
        name: { type: "string", optional: true, max: 128 },
      },
      handler: async (p, ctx) => {
        const done = await guarded(
          ctx.session.remoteAddr,
          () =>
            redeemInvitation({ invitations, accounts }, {
              code: p.code,
              algorithm: p.algorithm,
              publicKey: p.public_key,
              label: p.key_label,
              name: p.name,
            }, now()),
        );
        ctx.log.info("invitation_accepted", {
          address: done.user.address,
          kind: done.invitation.kind,
          id: done.invitation.id,
          ip: ctx.session.remoteAddr,
        });
        return {
          address: done.user.address,
          kind: done.invitation.kind,
          key_id: done.keyId,
        };
      },
    }),
    defineCommand({
      name: "user_add_invitation",
      auth: "user",
      params: EXPIRES_PARAM,
      handler: async (p, ctx) => {
        const address = ctx.caller!.name;
        const open = (await invitations.list(address)).filter((i) =>
          i.kind === "device"
        );
        if (open.length >= MAX_DEVICE_INVITATIONS) {
          throw new ProtocolError(
            ErrorCode.LIMIT_EXCEEDED,
            `at most ${MAX_DEVICE_INVITATIONS} open device invitations`,
          );
        }
        const { code, record } = await createInvitation(invitations, {
          kind: "device",
          address,
          createdBy: `user:${address}`,
          expiresIn: p.expires_in ?? 3600,
          now: now(),
        });
        ctx.log.info("invitation_added", { address, id: record.id });
        return {
          code: formatCode(code),
          link: linkOf(deps, code),
          invitation: invitationView(record),
        };
      },
    }),
    defineCommand({
      name: "user_get_invitations",
      auth: "user",
      params: {},
      handler: async (_p, ctx) => ({
        invitations: (await invitations.list(ctx.caller!.name))
          .filter((i) => i.kind === "device")
          .map(invitationView),
      }),
    }),
    defineCommand({
      name: "user_del_invitation",
      auth: "user",
      params: { id: { type: "string", min: 16, max: 16 } },
      handler: async (p, ctx) => {
        const mine = (await invitations.list(ctx.caller!.name)).find((i) =>
          i.id === p.id && i.kind === "device"
        );
        if (!mine || !(await invitations.delete(p.id))) {
          throw new ProtocolError(
            ErrorCode.NOT_FOUND,
            `no invitation ${p.id}`,
          );
        }
        return { id: p.id };
      },
    }),
  ];
}
