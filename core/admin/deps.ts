/**
 * What admin handlers need, and helpers they share.
 *
 * @module
 */

import {
  type AccountStore,
  InvalidCursorError,
  type Page,
} from "../../kv/mod.ts";
import type { LoginService, TokenService } from "../auth/mod.ts";
import { IdentityError, normalizeDomain } from "../../shared/identity.ts";
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
}

/** Largest page a list returns. */
export const MAX_PAGE = 500;
/** Page size when none is asked. */
export const DEFAULT_PAGE = 100;

/** Paging and filtering parameters shared by every list command. */
export const LIST_PARAMS = {
  limit: { type: "int", optional: true, min: 1, max: MAX_PAGE },
  cursor: { type: "string", optional: true, max: 1024 },
  search: { type: "string", optional: true, max: 256 },
} as const;

/**
 * A page of a list; a `cursor` the database cannot read is the client's
 * mistake (INVALID_PARAMETER), not a fault of the server.
 */
export async function pageOf<T>(list: Promise<Page<T>>): Promise<Page<T>> {
  try {
    return await list;
  } catch (error) {
    if (error instanceof InvalidCursorError) {
      throw new ProtocolError(
        ErrorCode.INVALID_PARAMETER,
        'parameter "cursor" is not a cursor this list gave',
        { parameter: "cursor" },
      );
    }
    throw error;
  }
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

/** A NOT_FOUND error for a kind of thing. */
export function notFound(kind: string, name: string): ProtocolError {
  return new ProtocolError(
    ErrorCode.NOT_FOUND,
    `${kind} ${name} does not exist`,
  );
}

/** An ALREADY_EXISTS error for a kind of thing. */
export function exists(kind: string, name: string): ProtocolError {
  return new ProtocolError(
    ErrorCode.ALREADY_EXISTS,
    `${kind} ${name} already exists`,
  );
}

/** A filter keeping items whose `field` contains `search` (case-insensitive). */
export function searchFilter<T>(
  search: string | undefined,
  field: (item: T) => string,
): ((item: T) => boolean) | undefined {
  if (!search) return undefined;
  const needle = search.toLowerCase();
  return (item) => field(item).toLowerCase().includes(needle);
}
