/**
 * The `amtp admin ...` and `amtp user ...` subcommands: each maps positional
 * arguments and flags to one command's parameters.
 *
 * @module
 */

import { type Args, UsageError } from "./cli_args.ts";
import { readPublicKey } from "../shared/login/keyfile.ts";

type FlagType = "string" | "int" | "bool" | "list" | "pubkey" | "file";

/** How one subcommand maps to a command. */
export interface SubcommandSpec {
  /** Wire command. */
  command: string;
  /** Parameter names of positional arguments, in order (all required). */
  positional?: string[];
  /** Flag name -> parameter name and type. */
  flags?: Record<string, [string, FlagType]>;
  /** One line of help. */
  help: string;
}

const LIST: Record<string, [string, FlagType]> = {
  limit: ["limit", "int"],
  cursor: ["cursor", "string"],
  search: ["search", "string"],
};

/** Module life-cycle subcommands: `<verb>-module NAME VERSION`. */
const MODULE_VERBS: [string, string][] = [
  ["load-module", "admin_load_module"],
  ["unload-module", "admin_unload_module"],
  ["reload-module", "admin_reload_module"],
  ["enable-module", "admin_enable_module"],
  ["disable-module", "admin_disable_module"],
  ["default-module", "admin_set_module_default"],
];

/** Admin subcommands. */
export const ADMIN_SUBCOMMANDS: Record<string, SubcommandSpec> = {
  ...Object.fromEntries(
    MODULE_VERBS.map(([name, command]) => [
      name,
      {
        command,
        positional: ["name", "version"],
        help: `${name} NAME VERSION`,
      },
    ]),
  ),
  sysinfo: { command: "admin_sysinfo", help: "system information" },
  domains: { command: "admin_get_domains", flags: LIST, help: "list domains" },
  "add-domain": {
    command: "admin_add_domain",
    positional: ["domain"],
    flags: {
      "registration-open": ["registration_open", "bool"],
      description: ["description", "string"],
    },
    help: "add-domain DOMAIN [--registration-open true] [--description TEXT]",
  },
  "set-domain": {
    command: "admin_set_domain",
    positional: ["domain"],
    flags: {
      "registration-open": ["registration_open", "bool"],
      description: ["description", "string"],
    },
    help:
      "set-domain DOMAIN [--registration-open true|false] [--description TEXT]",
  },
  "del-domain": {
    command: "admin_del_domain",
    positional: ["domain"],
    flags: { force: ["force", "bool"] },
    help: "del-domain DOMAIN [--force]",
  },
  users: {
    command: "admin_get_users",
    flags: { ...LIST, domain: ["domain", "string"] },
    help: "users [--domain DOMAIN] [--search TEXT] [--limit N] [--cursor C]",
  },
  "add-user": {
    command: "admin_add_user",
    positional: ["address"],
    flags: {
      key: ["public_key", "pubkey"],
      name: ["name", "string"],
      quota: ["quota", "int"],
      "key-label": ["key_label", "string"],
    },
    help: "add-user ADDRESS --key PUBLIC.pub [--name NAME] [--quota BYTES]",
  },
  "set-user": {
    command: "admin_set_user",
    positional: ["address"],
    flags: {
      name: ["name", "string"],
      disabled: ["disabled", "bool"],
      quota: ["quota", "int"],
      "add-key": ["add_key", "pubkey"],
      "del-key": ["del_key", "string"],
    },
    help:
      "set-user ADDRESS [--name N] [--disabled true|false] [--quota B] [--add-key F.pub] [--del-key ID]",
  },
  "del-user": {
    command: "admin_del_user",
    positional: ["address"],
    help: "del-user ADDRESS",
  },
  aliases: {
    command: "admin_get_aliases",
    flags: { ...LIST, domain: ["domain", "string"] },
    help: "aliases [--domain DOMAIN]",
  },
  "add-alias": {
    command: "admin_add_alias",
    positional: ["address"],
    flags: {
      to: ["recipients", "list"],
      description: ["description", "string"],
    },
    help: "add-alias ADDRESS --to A,B,C [--description TEXT]",
  },
  "set-alias": {
    command: "admin_set_alias",
    positional: ["address"],
    flags: {
      to: ["recipients", "list"],
      description: ["description", "string"],
    },
    help: "set-alias ADDRESS [--to A,B] [--description TEXT]",
  },
  "del-alias": {
    command: "admin_del_alias",
    positional: ["address"],
    help: "del-alias ADDRESS",
  },
  catchall: {
    command: "admin_get_catchall",
    positional: ["domain"],
    help: "catchall DOMAIN",
  },
  "set-catchall": {
    command: "admin_set_catchall",
    positional: ["domain"],
    flags: { to: ["recipients", "list"] },
    help: 'set-catchall DOMAIN --to A,B (--to "" turns it off)',
  },
  admins: { command: "admin_get_admins", flags: LIST, help: "list admins" },
  "add-admin": {
    command: "admin_add_admin",
    positional: ["name"],
    flags: {
      key: ["public_key", "pubkey"],
      "key-label": ["key_label", "string"],
    },
    help: "add-admin NAME --key PUBLIC.pub",
  },
  "set-admin": {
    command: "admin_set_admin",
    positional: ["name"],
    flags: {
      disabled: ["disabled", "bool"],
      "add-key": ["add_key", "pubkey"],
      "del-key": ["del_key", "string"],
    },
    help:
      "set-admin NAME [--disabled true|false] [--add-key F.pub] [--del-key ID]",
  },
  "del-admin": {
    command: "admin_del_admin",
    positional: ["name"],
    help: "del-admin NAME",
  },
  blocks: { command: "admin_get_blocks", help: "failed-login blocks" },
  modules: {
    command: "admin_get_modules",
    help: "modules with state and figures",
  },
  queue: {
    command: "admin_get_queue",
    flags: { domain: ["domain", "string"], limit: ["limit", "int"] },
    help: "queue [--domain D]: remote deliveries waiting",
  },
  "retry-queue": {
    command: "admin_retry_queue",
    positional: ["id"],
    help: "retry-queue ID: try now",
  },
  "del-queue": {
    command: "admin_del_queue",
    positional: ["id"],
    help: "del-queue ID: drop it",
  },
  "module-isolation": {
    command: "admin_set_module_isolation",
    positional: ["name", "version", "isolation"],
    help: "module-isolation NAME VERSION worker|process",
  },
  unblock: {
    command: "admin_del_block",
    positional: ["scope", "id"],
    help: "unblock account|ip ID",
  },
};

/** User subcommands. */
export const USER_SUBCOMMANDS: Record<string, SubcommandSpec> = {
  serverinfo: { command: "user_serverinfo", help: "server information" },
  userinfo: {
    command: "user_userinfo",
    positional: ["address"],
    help: "userinfo ADDRESS",
  },
  profile: {
    command: "user_set_profile",
    flags: {
      name: ["name", "string"],
      photo: ["photo", "file"],
      "photo-type": ["photo_type", "string"],
    },
    help: "profile [--name NAME] [--photo FILE --photo-type image/png]",
  },
  keys: { command: "user_get_keys", help: "your login keys" },
  "add-key": {
    command: "user_add_key",
    flags: {
      key: ["public_key", "pubkey"],
      "key-label": ["key_label", "string"],
    },
    help: "add-key --key PUBLIC.pub [--key-label LABEL]",
  },
  "del-key": {
    command: "user_del_key",
    positional: ["key_id"],
    help: "del-key KEY_ID",
  },
  sessions: { command: "user_get_sessions", help: "your logged-in sessions" },
  "del-session": {
    command: "user_del_session",
    positional: ["session_id"],
    help: "del-session SESSION_ID",
  },
};

/** Build a command's parameters from the arguments after the subcommand. */
export async function buildParams(
  spec: SubcommandSpec,
  args: Args,
): Promise<Record<string, unknown>> {
  const params: Record<string, unknown> = {};
  const positional = spec.positional ?? [];
  if (args.positional.length < positional.length) {
    throw new UsageError(`usage: ${spec.help}`);
  }
  positional.forEach((name, i) => params[name] = args.positional[i]);
  for (const [flag, value] of args.flags) {
    const mapping = spec.flags?.[flag];
    if (!mapping) continue;
    const [param, type] = mapping;
    switch (type) {
      case "string":
        params[param] = value;
        break;
      case "int":
        if (!/^\d+$/.test(value)) {
          throw new UsageError(`--${flag} takes a number`);
        }
        params[param] = Number(value);
        break;
      case "bool":
        params[param] = value !== "false";
        break;
      case "list":
        params[param] = value.split(",").map((s) => s.trim()).filter(Boolean);
        break;
      case "file":
        params[param] = await Deno.readFile(value);
        break;
      case "pubkey": {
        const key = await readPublicKey(value);
        if (param === "public_key") {
          params.public_key = key.spki;
          params.algorithm = key.algorithm;
        } else {
          params[param] = { algorithm: key.algorithm, public_key: key.spki };
        }
        break;
      }
    }
  }
  return params;
}
