/**
 * Checking the recipients of an alias or catch-all: valid addresses, local
 * ones existing, no loop through other aliases, a bounded count and depth.
 *
 * @module
 */

import type { AccountStore } from "../../kv/mod.ts";
import { splitAddress } from "../../shared/identity.ts";
import { accountName } from "../auth/mod.ts";
import { ErrorCode, ProtocolError } from "../protocol/mod.ts";

/** Recipients one alias or catch-all may list. */
export const MAX_RECIPIENTS = 100;
/** Aliases followed through before a chain counts as a loop. */
export const MAX_ALIAS_DEPTH = 8;

/**
 * Normalise and check recipients for `owner` (an alias address, or a domain
 * for a catch-all).
 *
 * @throws {ProtocolError} INVALID_ADDRESS, NOT_FOUND, ALIAS_LOOP or LIMIT_EXCEEDED
 */
export async function checkRecipients(
  accounts: AccountStore,
  owner: string,
  input: string[],
): Promise<string[]> {
  if (input.length > MAX_RECIPIENTS) {
    throw new ProtocolError(
      ErrorCode.LIMIT_EXCEEDED,
      `at most ${MAX_RECIPIENTS} recipients`,
    );
  }
  const recipients = [...new Set(input.map((r) => accountName("user", r)))];
  for (const recipient of recipients) {
    if (recipient === owner) {
      throw new ProtocolError(
        ErrorCode.ALIAS_LOOP,
        `${owner} cannot forward to itself`,
      );
    }
    const [, domain] = splitAddress(recipient);
    if (!(await accounts.getDomain(domain))) continue; // remote recipient
    if (await accounts.getUser(recipient)) continue;
    if (!(await accounts.getAlias(recipient))) {
      throw new ProtocolError(
        ErrorCode.NOT_FOUND,
        `recipient ${recipient} does not exist on this server`,
        { recipient },
      );
    }
    await followAliases(accounts, owner, recipient, 1);
  }
  return recipients;
}

async function followAliases(
  accounts: AccountStore,
  owner: string,
  address: string,
  depth: number,
): Promise<void> {
  if (address === owner) {
    throw new ProtocolError(
      ErrorCode.ALIAS_LOOP,
      `forwarding ${owner} would come back to it`,
    );
  }
  const alias = await accounts.getAlias(address);
  if (!alias) return;
  if (depth > MAX_ALIAS_DEPTH) {
    throw new ProtocolError(
      ErrorCode.ALIAS_LOOP,
      `aliases nest deeper than ${MAX_ALIAS_DEPTH}`,
    );
  }
  for (const next of alias.recipients) {
    await followAliases(accounts, owner, next, depth + 1);
  }
}
