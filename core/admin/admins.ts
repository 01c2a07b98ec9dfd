/**
 * Admin account commands: `admin_get_admins`, `admin_add_admin`,
 * `admin_set_admin`, `admin_del_admin` (records.ts).
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
import { type Command, ErrorCode, ProtocolError } from "../protocol/mod.ts";
import type { AdminDeps } from "./common.ts";
import { recordCommands } from "./records.ts";
import { changeKeys, KEY_CHANGE } from "./users.ts";

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
  const { accounts, tokens } = deps;
  return recordCommands({
    one: "admin",
    plural: "admins",
    key: {
      param: "name",
      max: 64,
      normalize: (input) => accountName("admin", input),
    },
    get: (name) => accounts.getAdmin(name),
    view: adminView,
    list: {
      params: {},
      page: (_p, options) => accounts.listAdmins(options),
      text: (a) => a.name,
    },
    add: {
      params: KEY_PARAMS,
      create: async (name, p) => {
        const key = await makeKeyRecord(p.algorithm, p.public_key, p.key_label);
        const now = new Date();
        return {
          name,
          keys: [key],
          disabled: false,
          created: now,
          updated: now,
        };
      },
      store: (admin) => accounts.addAdmin(admin),
      added: (admin, ctx) =>
        ctx.log.info("admin_added", { name: admin.name, by: ctx.caller?.name }),
    },
    set: {
      params: { disabled: { type: "bool", optional: true }, ...KEY_CHANGE },
      change: async (admin, p) => {
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
      },
      store: async (admin) => {
        await accounts.putAdmin(admin);
        if (admin.disabled) await tokens.revokeAll("admin", admin.name);
      },
    },
    del: {
      params: {},
      remove: async (_admin, name, _p, ctx) => {
        const result = await accounts.deleteAdmin(name);
        if (result === "last") {
          throw new ProtocolError(
            ErrorCode.LAST_ADMIN,
            "the last admin cannot be deleted",
          );
        }
        await tokens.revokeAll("admin", name);
        ctx.log.info("admin_deleted", { name, by: ctx.caller?.name });
        return { name };
      },
    },
  });
}
