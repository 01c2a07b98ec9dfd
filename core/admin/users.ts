/**
 * User commands for admins: `admin_get_users`, `admin_add_user`,
 * `admin_set_user`, `admin_del_user` (records.ts); and the key changes users
 * and admins share.
 *
 * @module
 */

import type { UserRecord } from "../../kv/mod.ts";
import {
  accountName,
  addKey,
  KEY_PARAMS,
  keyView,
  makeKeyRecord,
  removeKey,
} from "../auth/mod.ts";
import { type Command, ErrorCode, ProtocolError } from "../protocol/mod.ts";
import { type AdminDeps, domainParam } from "./common.ts";
import { recordCommands } from "./records.ts";

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

/** Parameters adding or removing one login key. */
export const KEY_CHANGE = {
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

/** The admin commands on users. */
export function userAdminCommands(deps: AdminDeps): Command[] {
  const { accounts, tokens } = deps;
  return recordCommands({
    one: "user",
    plural: "users",
    taken: "address",
    key: {
      param: "address",
      max: 320,
      normalize: (input) => accountName("user", input),
    },
    get: (address) => accounts.getUser(address),
    view: userView,
    list: {
      params: { domain: { type: "string", optional: true, max: 253 } },
      page: (p, options) =>
        accounts.listUsers(
          p.domain ? domainParam(p.domain) : undefined,
          options,
        ),
      text: (u) => `${u.address} ${u.name}`,
    },
    add: {
      params: {
        name: { type: "string", optional: true, max: 128 },
        quota: { type: "int", optional: true, min: 0 },
        ...KEY_PARAMS,
      },
      create: async (address, p) => {
        const key = await makeKeyRecord(p.algorithm, p.public_key, p.key_label);
        const now = new Date();
        return {
          address,
          name: p.name ?? "",
          keys: [key],
          public_keys: [],
          disabled: false,
          quota: p.quota ?? 0,
          created: now,
          updated: now,
        };
      },
      store: (user) => accounts.addUser(user),
      added: (user, ctx) =>
        ctx.log.info("user_added", { address: user.address }),
    },
    set: {
      params: {
        name: { type: "string", optional: true, max: 128 },
        disabled: { type: "bool", optional: true },
        quota: { type: "int", optional: true, min: 0 },
        ...KEY_CHANGE,
      },
      change: async (user, p) => {
        if (p.name !== undefined) user.name = p.name;
        if (p.quota !== undefined) user.quota = p.quota;
        if (p.disabled !== undefined) user.disabled = p.disabled;
        user.keys = await changeKeys(user.keys, p);
        user.updated = new Date();
      },
      store: async (user) => {
        await accounts.putUser(user);
        if (user.disabled) await tokens.revokeAll("user", user.address);
      },
    },
    del: {
      params: {},
      remove: async (_user, address, _p, ctx) => {
        await tokens.revokeAll("user", address);
        await accounts.deleteUser(address);
        await deps.push?.deleteAll(address);
        const dropped = await accounts.removeRecipient(address);
        ctx.log.info("user_deleted", { address });
        return {
          address,
          aliases_updated: dropped.aliases,
          catchalls_updated: dropped.catchalls,
        };
      },
    },
  });
}
