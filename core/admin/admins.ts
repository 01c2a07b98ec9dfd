/**
 * Admin account commands: `admin_get_admins`, `admin_add_admin`,
 * `admin_set_admin`, `admin_del_admin`.
 *
 * @module
 */

import type { AdminRecord } from "../../kv/mod.ts";
import {
  accountName,
  KEY_PARAMS,
  keyView,
  makeKeyRecord,
} from "../auth/mod.ts";
import {
  type Command,
  defineCommand,
  ErrorCode,
  ProtocolError,
} from "../protocol/mod.ts";
import {
  type AdminDeps,
  DEFAULT_PAGE,
  exists,
  LIST_PARAMS,
  notFound,
  pageOf,
  searchFilter,
} from "./deps.ts";
import { changeKeys } from "./users.ts";

/** What admins see of an admin. */
export function adminView(admin: AdminRecord): Record<string, unknown> {
  return {
    name: admin.name,
    disabled: admin.disabled,
    keys: admin.keys.map(keyView),
    created: admin.created,
    updated: admin.updated,
  };
}

/** The admin account commands. */
export function adminAccountCommands(deps: AdminDeps): Command[] {
  const { accounts } = deps;
  return [
    defineCommand({
      name: "admin_get_admins",
      auth: "admin",
      params: LIST_PARAMS,
      handler: async (p) => {
        const page = await pageOf(accounts.listAdmins({
          limit: p.limit ?? DEFAULT_PAGE,
          cursor: p.cursor,
          filter: searchFilter(p.search, (a) => a.name),
        }));
        return { admins: page.items.map(adminView), cursor: page.cursor };
      },
    }),
    defineCommand({
      name: "admin_add_admin",
      auth: "admin",
      params: { name: { type: "string", max: 64 }, ...KEY_PARAMS },
      handler: async (p, ctx) => {
        const name = accountName("admin", p.name);
        const key = await makeKeyRecord(p.algorithm, p.public_key, p.key_label);
        const now = new Date();
        const record: AdminRecord = {
          name,
          keys: [key],
          disabled: false,
          created: now,
          updated: now,
        };
        if ((await accounts.addAdmin(record)) === "exists") {
          throw exists("admin", name);
        }
        ctx.log.info("admin_added", { name, by: ctx.caller?.name });
        return adminView(record);
      },
    }),
    defineCommand({
      name: "admin_set_admin",
      auth: "admin",
      params: {
        name: { type: "string", max: 64 },
        disabled: { type: "bool", optional: true },
        add_key: { type: "object", optional: true },
        del_key: { type: "string", optional: true, max: 64 },
      },
      handler: async (p) => {
        const name = accountName("admin", p.name);
        const admin = await accounts.getAdmin(name);
        if (!admin) throw notFound("admin", name);
        if (p.disabled === true && !admin.disabled) {
          const enabled = (await accounts.listAdmins({ limit: 1000 })).items
            .filter((a) => !a.disabled);
          if (enabled.length <= 1) {
            throw new ProtocolError(
              ErrorCode.LAST_ADMIN,
              "the last enabled admin cannot be disabled",
            );
          }
        }
        if (p.disabled !== undefined) admin.disabled = p.disabled;
        admin.keys = await changeKeys(admin.keys, p);
        admin.updated = new Date();
        await accounts.putAdmin(admin);
        if (admin.disabled) await deps.tokens.revokeAll("admin", name);
        return adminView(admin);
      },
    }),
    defineCommand({
      name: "admin_del_admin",
      auth: "admin",
      params: { name: { type: "string", max: 64 } },
      handler: async (p, ctx) => {
        const name = accountName("admin", p.name);
        const result = await accounts.deleteAdmin(name);
        if (result === "missing") throw notFound("admin", name);
        if (result === "last") {
          throw new ProtocolError(
            ErrorCode.LAST_ADMIN,
            "the last admin cannot be deleted",
          );
        }
        await deps.tokens.revokeAll("admin", name);
        ctx.log.info("admin_deleted", { name, by: ctx.caller?.name });
        return { name };
      },
    }),
  ];
}
