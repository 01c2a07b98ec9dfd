/**
 * Domain and catch-all commands: `admin_get_domains`, `admin_add_domain`,
 * `admin_set_domain`, `admin_del_domain`, `admin_get_catchall`,
 * `admin_set_catchall`.
 *
 * @module
 */

import type { DomainRecord } from "../../kv/mod.ts";
import {
  type Command,
  defineCommand,
  ErrorCode,
  ProtocolError,
} from "../protocol/mod.ts";
import {
  type AdminDeps,
  DEFAULT_PAGE,
  domainParam,
  exists,
  LIST_PARAMS,
  notFound,
  pageOf,
  searchFilter,
} from "./deps.ts";
import { checkRecipients } from "./recipients.ts";

/** The domain and catch-all commands. */
export function domainCommands(deps: AdminDeps): Command[] {
  const { accounts } = deps;
  const mustGet = async (name: string): Promise<DomainRecord> => {
    const domain = await accounts.getDomain(name);
    if (!domain) throw notFound("domain", name);
    return domain;
  };
  return [
    defineCommand({
      name: "admin_get_domains",
      auth: "admin",
      params: LIST_PARAMS,
      handler: async (p) => {
        const page = await pageOf(accounts.listDomains({
          limit: p.limit ?? DEFAULT_PAGE,
          cursor: p.cursor,
          filter: searchFilter(p.search, (d) => d.name),
        }));
        return { domains: page.items, cursor: page.cursor };
      },
    }),
    defineCommand({
      name: "admin_add_domain",
      auth: "admin",
      params: {
        domain: { type: "string", max: 253 },
        registration_open: { type: "bool", optional: true },
        description: { type: "string", optional: true, max: 1000 },
      },
      handler: async (p, ctx) => {
        const record: DomainRecord = {
          name: domainParam(p.domain),
          created: new Date(),
          registration_open: p.registration_open ?? false,
          description: p.description ?? "",
        };
        if ((await accounts.addDomain(record)) === "exists") {
          throw exists("domain", record.name);
        }
        ctx.log.info("domain_added", { domain: record.name });
        return record;
      },
    }),
    defineCommand({
      name: "admin_set_domain",
      auth: "admin",
      params: {
        domain: { type: "string", max: 253 },
        registration_open: { type: "bool", optional: true },
        description: { type: "string", optional: true, max: 1000 },
      },
      handler: async (p) => {
        const record = await mustGet(domainParam(p.domain));
        if (p.registration_open !== undefined) {
          record.registration_open = p.registration_open;
        }
        if (p.description !== undefined) record.description = p.description;
        await accounts.putDomain(record);
        return record;
      },
    }),
    defineCommand({
      name: "admin_del_domain",
      auth: "admin",
      params: {
        domain: { type: "string", max: 253 },
        force: { type: "bool", optional: true },
      },
      handler: async (p, ctx) => {
        const name = domainParam(p.domain);
        await mustGet(name);
        const counts = await accounts.domainCounts(name);
        if ((counts.users > 0 || counts.aliases > 0) && !p.force) {
          throw new ProtocolError(
            ErrorCode.DOMAIN_NOT_EMPTY,
            `domain ${name} still has ${counts.users} users and ${counts.aliases} aliases: pass force: true to delete them too`,
            counts,
          );
        }
        const users = await accounts.listUsers(name, { limit: 100_000 });
        for (const user of users.items) {
          await deps.tokens.revokeAll("user", user.address);
        }
        await accounts.deleteDomain(name);
        ctx.log.info("domain_deleted", { domain: name, ...counts });
        return {
          domain: name,
          deleted_users: counts.users,
          deleted_aliases: counts.aliases,
        };
      },
    }),
    defineCommand({
      name: "admin_get_catchall",
      auth: "admin",
      params: { domain: { type: "string", max: 253 } },
      handler: async (p) => {
        const name = domainParam(p.domain);
        await mustGet(name);
        const record = await accounts.getCatchall(name);
        return { domain: name, recipients: record?.recipients ?? [] };
      },
    }),
    defineCommand({
      name: "admin_set_catchall",
      auth: "admin",
      params: {
        domain: { type: "string", max: 253 },
        recipients: { type: "array", items: "string", itemMax: 320 },
      },
      handler: async (p) => {
        const name = domainParam(p.domain);
        await mustGet(name);
        const recipients = await checkRecipients(
          accounts,
          `@${name}`,
          p.recipients as string[],
        );
        await accounts.setCatchall({
          domain: name,
          recipients,
          updated: new Date(),
        });
        return { domain: name, recipients };
      },
    }),
  ];
}
