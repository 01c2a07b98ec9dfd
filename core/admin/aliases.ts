/**
 * Alias commands for admins: `admin_get_aliases`, `admin_add_alias`,
 * `admin_set_alias`, `admin_del_alias` (records.ts).
 *
 * @module
 */

import type { AliasRecord } from "../../kv/mod.ts";
import { accountName } from "../auth/mod.ts";
import type { Command } from "../protocol/mod.ts";
import { type AdminDeps, domainParam } from "./common.ts";
import { checkRecipients } from "./recipients.ts";
import { recordCommands } from "./records.ts";

/** The admin commands on aliases. */
export function aliasCommands(deps: AdminDeps): Command[] {
  const { accounts } = deps;
  return recordCommands({
    one: "alias",
    plural: "aliases",
    taken: "address",
    key: {
      param: "address",
      max: 320,
      normalize: (input) => accountName("user", input),
    },
    get: (address) => accounts.getAlias(address),
    view: (alias: AliasRecord) => alias,
    list: {
      params: { domain: { type: "string", optional: true, max: 253 } },
      page: (p, options) =>
        accounts.listAliases(
          p.domain ? domainParam(p.domain) : undefined,
          options,
        ),
      text: (a) => `${a.address} ${a.recipients.join(" ")}`,
    },
    add: {
      params: {
        recipients: { type: "array", items: "string", min: 1, itemMax: 320 },
        description: { type: "string", optional: true, max: 1000 },
      },
      create: async (address, p) => {
        const now = new Date();
        return {
          address,
          recipients: await checkRecipients(
            accounts,
            address,
            p.recipients as string[],
          ),
          description: p.description ?? "",
          created: now,
          updated: now,
        };
      },
      store: (alias) => accounts.addAlias(alias),
    },
    set: {
      params: {
        recipients: {
          type: "array",
          items: "string",
          optional: true,
          min: 1,
          itemMax: 320,
        },
        description: { type: "string", optional: true, max: 1000 },
      },
      change: async (alias, p) => {
        if (p.recipients) {
          alias.recipients = await checkRecipients(
            accounts,
            alias.address,
            p.recipients as string[],
          );
        }
        if (p.description !== undefined) alias.description = p.description;
        alias.updated = new Date();
      },
      store: (alias) => accounts.putAlias(alias),
    },
    del: {
      params: {},
      remove: async (_alias, address) => {
        await accounts.deleteAlias(address);
        const dropped = await accounts.removeRecipient(address);
        return { address, aliases_updated: dropped.aliases };
      },
    },
  });
}
