/**
 * Login commands: `admin_login_request`, `admin_login_verify`,
 * `user_login_request`, `user_login_verify`.
 *
 * @module
 */

import {
  IdentityError,
  normalizeAddress,
  normalizeAdminName,
} from "../../shared/identity.ts";
import {
  type Command,
  defineCommand,
  ErrorCode,
  ProtocolError,
} from "../protocol/mod.ts";
import type { LoginService } from "./login.ts";
import { hashToken } from "./tokens.ts";

/** Normalise an account name of a kind, or throw INVALID_ADDRESS. */
export function accountName(kind: "admin" | "user", input: string): string {
  try {
    return kind === "admin"
      ? normalizeAdminName(input)
      : normalizeAddress(input);
  } catch (error) {
    if (error instanceof IdentityError) {
      throw new ProtocolError(ErrorCode.INVALID_ADDRESS, error.message, {
        rule: error.rule,
      });
    }
    throw error;
  }
}

/** The four login commands. */
export function loginCommands(login: LoginService): Command[] {
  const commands: Command[] = [];
  for (const kind of ["admin", "user"] as const) {
    commands.push(
      defineCommand({
        name: `${kind}_login_request`,
        auth: "none",
        params: {
          user: { type: "string", min: 1, max: 320 },
          server: { type: "string", min: 1, max: 255 },
          key_id: { type: "string", optional: true, max: 64 },
        },
        handler: (params, ctx) =>
          login.request(kind, accountName(kind, params.user), ctx.session, {
            server: params.server,
            keyId: params.key_id,
          }),
      }),
      defineCommand({
        name: `${kind}_login_verify`,
        auth: "none",
        params: {
          user: { type: "string", min: 1, max: 320 },
          verification_string: {
            type: "string",
            optional: true,
            min: 1,
            max: 256,
          },
          signature: { type: "binary", optional: true, min: 1, max: 512 },
          client_nonce: { type: "binary", optional: true, max: 64 },
          label: { type: "string", optional: true, max: 64 },
        },
        handler: async (params, ctx) => {
          const account = accountName(kind, params.user);
          if (
            params.verification_string === undefined &&
            params.signature === undefined
          ) {
            throw new ProtocolError(
              ErrorCode.INVALID_PARAMETER,
              'parameter "verification_string" or "signature" is required',
              { parameter: "verification_string" },
            );
          }
          const { token, expires } = await login.verify(
            kind,
            account,
            {
              verification_string: params.verification_string,
              signature: params.signature,
              client_nonce: params.client_nonce,
            },
            { session: ctx.session, label: params.label },
          );
          if (kind === "user") {
            ctx.session.bindUser?.(account, await hashToken(token));
          }
          return { [`${kind}_token`]: token, expires };
        },
      }),
    );
  }
  return commands;
}
