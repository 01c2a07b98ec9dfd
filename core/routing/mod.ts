/**
 * Recipient resolution: from the addresses a sender wrote to the mailboxes
 * that receive. Local users receive; aliases expand (nested at most 8 deep,
 * each address once); an unknown local address goes to its domain's catch-all
 * when one is set; addresses on domains not hosted here are remote.
 *
 * @module
 */

import type { AccountStore } from "../../kv/mod.ts";
import {
  IdentityError,
  normalizeAddress,
  splitAddress,
} from "../../shared/identity.ts";

/** Aliases followed before a chain is cut. */
export const MAX_DEPTH = 8;

/** Where one written address leads. */
export interface Resolution {
  /** The address as written. */
  input: string;
  /** Normalised address, when valid. */
  address?: string;
  /** `local` (mailboxes here), `remote`, `unknown` (no such local address, no catch-all) or `invalid`. */
  kind: "local" | "remote" | "unknown" | "invalid";
  /** For `local`: the users that receive (an alias may lead to several). */
  mailboxes: { address: string; quota: number }[];
  /** For `remote`: the remote addresses (an alias may forward outside). */
  remote: string[];
  /** `alias` or `catchall` when the address was forwarded. */
  via?: "alias" | "catchall";
  /** Why it is `invalid` or `unknown`. */
  reason?: string;
}

/** Resolve written addresses, in order. */
export async function resolveRecipients(
  accounts: AccountStore,
  inputs: string[],
): Promise<Resolution[]> {
  const hosted = new Map<string, boolean>();
  const isHosted = async (domain: string) => {
    if (!hosted.has(domain)) {
      hosted.set(domain, (await accounts.getDomain(domain)) !== null);
    }
    return hosted.get(domain)!;
  };
  const out: Resolution[] = [];
  for (const input of inputs) {
    let address: string;
    try {
      address = normalizeAddress(input);
    } catch (error) {
      out.push({
        input,
        kind: "invalid",
        mailboxes: [],
        remote: [],
        reason: error instanceof IdentityError ? error.rule : "invalid address",
      });
      continue;
    }
    const result: Resolution = {
      input,
      address,
      kind: "unknown",
      mailboxes: [],
      remote: [],
    };
    const seen = new Set<string>();
    const expand = async (
      target: string,
      depth: number,
      catchallUsed: boolean,
    ): Promise<void> => {
      if (seen.has(target) || depth > MAX_DEPTH) return;
      seen.add(target);
      const [, domain] = splitAddress(target);
      if (!(await isHosted(domain))) {
        result.remote.push(target);
        return;
      }
      const user = await accounts.getUser(target);
      if (user && !user.disabled) {
        result.mailboxes.push({ address: user.address, quota: user.quota });
        return;
      }
      if (user) return; // disabled: receives nothing
      const alias = await accounts.getAlias(target);
      if (alias) {
        result.via ??= "alias";
        for (const next of alias.recipients) {
          await expand(next, depth + 1, catchallUsed);
        }
        return;
      }
      if (catchallUsed) return;
      const catchall = await accounts.getCatchall(domain);
      if (catchall && catchall.recipients.length > 0) {
        result.via ??= "catchall";
        for (const next of catchall.recipients) {
          await expand(next, depth + 1, true);
        }
      }
    };
    await expand(address, 0, false);
    if (result.mailboxes.length > 0) result.kind = "local";
    else if (result.remote.length > 0) result.kind = "remote";
    else result.reason = `no mailbox ${address} on this server`;
    out.push(result);
  }
  return out;
}
