/**
 * Domain and catch-all commands: `admin_get_domains`, `admin_add_domain`,
 * `admin_set_domain`, `admin_del_domain` (records.ts), `admin_get_catchall`,
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
import { type AdminDeps, domainParam } from "./common.ts";
import { checkRecipients } from "./recipients.ts";
import { notFound, recordCommands } from "./records.ts";

const DOMAIN_FIELDS = {
  registration_open: { type: "bool", optional: true },
  description: { type: "string", optional: true, max: 1000 },
} as const;

/** The domain and catch-all commands. */
export function domainCommands(deps: AdminDeps): Command[] {
  const { accounts } = deps;
  const hosted = async (name: string): Promise<DomainRecord> => {
    const domain = await accounts.getDomain(name);
    if (!domain) throw notFound("domain", name);
    return domain;
  };
  return [
    ...recordCommands({
      one: "domain",
      plural: "domains",
      key: { param: "domain", max: 253, normalize: domainParam },
      get: (name) => accounts.getDomain(name),
      view: (domain: DomainRecord) => domain,
      list: {
        params: {},
        page: (_p, options) => accounts.listDomains(options),
        text: (d) => d.name,
      },
      add: {
        params: DOMAIN_FIELDS,
        create: (name, p) =>
          Promise.resolve({
            name,
            created: new Date(),
            registration_open: p.registration_open ?? false,
            description: p.description ?? "",
          }),
        store: (domain) => accounts.addDomain(domain),
        added: (domain, ctx) =>
          ctx.log.info("domain_added", { domain: domain.name }),
      },
      set: {
        params: DOMAIN_FIELDS,
        change: (domain, p) => {
          if (p.registration_open !== undefined) {
            domain.registration_open = p.registration_open;
          }
          if (p.description !== undefined) domain.description = p.description;
          return Promise.resolve();
        },
        store: (domain) => accounts.putDomain(domain),
      },
      del: {
        params: { force: { type: "bool", optional: true } },
        remove: async (_domain, name, p, ctx) => {
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
            await deps.push?.deleteAll(user.address);
          }
          await accounts.deleteDomain(name);
          ctx.log.info("domain_deleted", { domain: name, ...counts });
          return {
            domain: name,
            deleted_users: counts.users,
            deleted_aliases: counts.aliases,
          };
        },
      },
    }),
    defineCommand({
      name: "admin_get_catchall",
      auth: "admin",
      params: { domain: { type: "string", max: 253 } },
      handler: async (p) => {
        const name = (await hosted(domainParam(p.domain))).name;
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
        const name = (await hosted(domainParam(p.domain))).name;
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
