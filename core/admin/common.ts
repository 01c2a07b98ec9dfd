/**
 * What every admin command file is given (the services it uses), and the
 * domain parameter rule they share.
 *
 * @module
 */

import type { AccountStore, InvitationStore, PushStore } from "../../kv/mod.ts";
import { IdentityError, normalizeDomain } from "../../shared/identity.ts";
import type { LoginService, TokenService } from "../auth/mod.ts";
import { ErrorCode, ProtocolError } from "../protocol/mod.ts";

/** Dependencies of the admin commands. */
export interface AdminDeps {
  /** Account records. */
  accounts: AccountStore;
  /** Tokens (logout, revocation on delete). */
  tokens: TokenService;
  /** Logins (blocks). */
  login: LoginService;
  /** Server start time (uptime). */
  startedAt: number;
  /** Invitations. */
  invitations: InvitationStore;
  /** Push subscriptions (dropped with their user). */
  push?: PushStore;
  /** The web app's address (invitation links), when it is served. */
  webUrl?: () => string | undefined;
  /** Clock of invitations in epoch milliseconds (tests move it). */
  now?: () => number;
}

/** Normalise a domain parameter or throw INVALID_ADDRESS. */
export function domainParam(input: string): string {
  try {
    return normalizeDomain(input);
  } catch (error) {
    if (error instanceof IdentityError) {
      throw new ProtocolError(ErrorCode.INVALID_ADDRESS, error.message, {
        rule: error.rule,
      });
    }
    throw error;
  }
}
