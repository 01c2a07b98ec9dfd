/**
 * User and alias commands: `admin_get_users`, `admin_add_user`,
 * `admin_set_user`, `admin_del_user`, `admin_get_aliases`, `admin_add_alias`,
 * `admin_set_alias`, `admin_del_alias`.
 *
 * @module
 */

import type { AliasRecord, UserRecord } from "../../kv/mod.ts";
import {
  accountName,
  addKey,
  KEY_PARAMS,
  keyView,
  makeKeyRecord,
  removeKey,
} from "../auth/mod.ts";
import { splitAddress } from "../../shared/identity.ts";
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

/** What admins see of a user. */
export function userView(user: UserRecord): Record<string, unknown> {
  return {
    address: user.address,
    name: user.name,
    disabled: user.disabled,
    quota: user.quota,
    keys: user.keys.map(keyView),
    created: user.created,
    updated: user.updated,
  };
}

const KEY_CHANGE = {
  add_key: { type: "object", optional: true },
  del_key: { type: "string", optional: true, max: 64 },
} as const;

/** Apply `add_key` / `del_key` parameters to a key list. */
export async function changeKeys(
  keys: UserRecord["keys"],
  change: { add_key?: Record<string, unknown>; del_key?: string },
): Promise<UserRecord["keys"]> {
  let out = keys;
  if (change.add_key) {
    const { algorithm, public_key, key_label } = change.add_key;
    if (typeof algorithm !== "string" || !(public_key instanceof Uint8Array)) {
      throw new ProtocolError(
        ErrorCode.INVALID_PARAMETER,
        'parameter "add_key" needs algorithm (string) and public_key (binary)',
        { parameter: "add_key" },
      );
    }
    const label = typeof key_label === "string" ? key_label.slice(0, 64) : "";
    out = addKey(out, await makeKeyRecord(algorithm, public_key, label));
  }
  if (change.del_key) out = removeKey(out, change.del_key);
  return out;
}

/** The user and alias commands. */
export function userCommands(deps: AdminDeps): Command[] {
  const { accounts } = deps;
  const mustGetUser = async (address: string): Promise<UserRecord> => {
    const user = await accounts.getUser(address);
    if (!user) throw notFound("user", address);
    return user;
  };
  const mustGetAlias = async (address: string): Promise<AliasRecord> => {
    const alias = await accounts.getAlias(address);
    if (!alias) throw notFound("alias", address);
    return alias;
  };
  return [
    defineCommand({
      name: "admin_get_users",
      auth: "admin",
      params: {
        ...LIST_PARAMS,
        domain: { type: "string", optional: true, max: 253 },
      },
      handler: async (p) => {
        const page = await pageOf(accounts.listUsers(
          p.domain ? domainParam(p.domain) : undefined,
          {
            limit: p.limit ?? DEFAULT_PAGE,
            cursor: p.cursor,
            filter: searchFilter(p.search, (u) => `${u.address} ${u.name}`),
          },
        ));
        return { users: page.items.map(userView), cursor: page.cursor };
      },
    }),
    defineCommand({
      name: "admin_add_user",
      auth: "admin",
      params: {
        address: { type: "string", max: 320 },
        name: { type: "string", optional: true, max: 128 },
        quota: { type: "int", optional: true, min: 0 },
        ...KEY_PARAMS,
      },
      handler: async (p, ctx) => {
        const address = accountName("user", p.address);
        const key = await makeKeyRecord(p.algorithm, p.public_key, p.key_label);
        const now = new Date();
        const record: UserRecord = {
          address,
          name: p.name ?? "",
          keys: [key],
          public_keys: [],
          disabled: false,
          quota: p.quota ?? 0,
          created: now,
          updated: now,
        };
        const result = await accounts.addUser(record);
        if (result === "no_domain") {
          throw new ProtocolError(
            ErrorCode.UNKNOWN_DOMAIN,
            `domain ${
              splitAddress(address)[1]
            } is not hosted here: add it first`,
          );
        }
        if (result === "exists") throw exists("address", address);
        ctx.log.info("user_added", { address });
        return userView(record);
      },
    }),
    defineCommand({
      name: "admin_set_user",
      auth: "admin",
      params: {
        address: { type: "string", max: 320 },
        name: { type: "string", optional: true, max: 128 },
        disabled: { type: "bool", optional: true },
        quota: { type: "int", optional: true, min: 0 },
        ...KEY_CHANGE,
      },
      handler: async (p) => {
        const user = await mustGetUser(accountName("user", p.address));
        if (p.name !== undefined) user.name = p.name;
        if (p.quota !== undefined) user.quota = p.quota;
        if (p.disabled !== undefined) user.disabled = p.disabled;
        user.keys = await changeKeys(user.keys, p);
        user.updated = new Date();
        await accounts.putUser(user);
        if (user.disabled) await deps.tokens.revokeAll("user", user.address);
        return userView(user);
      },
    }),
    defineCommand({
      name: "admin_del_user",
      auth: "admin",
      params: { address: { type: "string", max: 320 } },
      handler: async (p, ctx) => {
        const address = accountName("user", p.address);
        await mustGetUser(address);
        await deps.tokens.revokeAll("user", address);
        await accounts.deleteUser(address);
        const dropped = await accounts.removeRecipient(address);
        ctx.log.info("user_deleted", { address });
        return {
          address,
          aliases_updated: dropped.aliases,
          catchalls_updated: dropped.catchalls,
        };
      },
    }),
    defineCommand({
      name: "admin_get_aliases",
      auth: "admin",
      params: {
        ...LIST_PARAMS,
        domain: { type: "string", optional: true, max: 253 },
      },
      handler: async (p) => {
        const page = await pageOf(accounts.listAliases(
          p.domain ? domainParam(p.domain) : undefined,
          {
            limit: p.limit ?? DEFAULT_PAGE,
            cursor: p.cursor,
            filter: searchFilter(
              p.search,
              (a) => `${a.address} ${a.recipients.join(" ")}`,
            ),
          },
        ));
        return { aliases: page.items, cursor: page.cursor };
      },
    }),
    defineCommand({
      name: "admin_add_alias",
      auth: "admin",
      params: {
        address: { type: "string", max: 320 },
        recipients: { type: "array", items: "string", min: 1, itemMax: 320 },
        description: { type: "string", optional: true, max: 1000 },
      },
      handler: async (p) => {
        const address = accountName("user", p.address);
        const recipients = await checkRecipients(
          accounts,
          address,
          p.recipients as string[],
        );
        const now = new Date();
        const record: AliasRecord = {
          address,
          recipients,
          description: p.description ?? "",
          created: now,
          updated: now,
        };
        const result = await accounts.addAlias(record);
        if (result === "no_domain") {
          throw new ProtocolError(
            ErrorCode.UNKNOWN_DOMAIN,
            `domain ${
              splitAddress(address)[1]
            } is not hosted here: add it first`,
          );
        }
        if (result === "exists") throw exists("address", address);
        return record;
      },
    }),
    defineCommand({
      name: "admin_set_alias",
      auth: "admin",
      params: {
        address: { type: "string", max: 320 },
        recipients: {
          type: "array",
          items: "string",
          optional: true,
          min: 1,
          itemMax: 320,
        },
        description: { type: "string", optional: true, max: 1000 },
      },
      handler: async (p) => {
        const alias = await mustGetAlias(accountName("user", p.address));
        if (p.recipients) {
          alias.recipients = await checkRecipients(
            accounts,
            alias.address,
            p.recipients as string[],
          );
        }
        if (p.description !== undefined) alias.description = p.description;
        alias.updated = new Date();
        await accounts.putAlias(alias);
        return alias;
      },
    }),
    defineCommand({
      name: "admin_del_alias",
      auth: "admin",
      params: { address: { type: "string", max: 320 } },
      handler: async (p) => {
        const address = accountName("user", p.address);
        await mustGetAlias(address);
        await accounts.deleteAlias(address);
        const dropped = await accounts.removeRecipient(address);
        return { address, aliases_updated: dropped.aliases };
      },
    }),
  ];
}
