/**
 * The `amtp admin ...` and `amtp user ...` subcommands: a table where each
 * maps positional arguments and flags to one command's parameters, and
 * carries its own help.
 *
 * @module
 */

import { type Args, type FlagSpec, UsageError } from "./cli_args.ts";
import { keyFile } from "./cli_config.ts";
import { readPublicKey } from "../shared/login/keyfile.ts";
import { ADMIN_MODULE_FLAGS } from "./package_cli.ts";

type FlagType =
  | "string"
  | "int"
  | "bool"
  | "switch"
  | "list"
  | "pubkey"
  | "file";

/** A flag of a subcommand: the parameter it sets, its type, and help. */
export interface ParamFlag {
  /** Parameter name on the wire. */
  param: string;
  /** How the value becomes the parameter. */
  type: FlagType;
  /** Placeholder of the value in help (absent for a switch). */
  value?: string;
  /** One line of help. */
  help: string;
}

/** How one subcommand maps to a command. */
export interface SubcommandSpec {
  /** Wire command. */
  command: string;
  /** Parameter names of positional arguments, in order (all required). */
  positional?: string[];
  /** Flag name -> parameter, type and help. */
  flags?: Record<string, ParamFlag>;
  /** What it does, one line. */
  help: string;
}

function flag(
  param: string,
  type: FlagType,
  value: string | undefined,
  help: string,
): ParamFlag {
  return { param, type, value: type === "switch" ? undefined : value, help };
}

const LIST: Record<string, ParamFlag> = {
  limit: flag("limit", "int", "N", "at most N (1-500, default 100)"),
  cursor: flag("cursor", "string", "C", "the next page, from the previous one"),
  search: flag("search", "string", "TEXT", "only names containing TEXT"),
};

/** Module life-cycle subcommands: `<verb>-module NAME VERSION`. */
const MODULE_VERBS: [string, string, string][] = [
  ["load-module", "admin_load_module", "load a module version and start it"],
  [
    "unload-module",
    "admin_unload_module",
    "stop a module version and forget it",
  ],
  [
    "reload-module",
    "admin_reload_module",
    "start a new copy with the code on disk",
  ],
  ["enable-module", "admin_enable_module", "serve a module version again"],
  ["disable-module", "admin_disable_module", "stop serving a module version"],
  [
    "default-module",
    "admin_set_module_default",
    "the version requests without one get",
  ],
];

const DOMAIN_FLAGS = {
  "registration-open": flag(
    "registration_open",
    "bool",
    "true|false",
    "whether anyone may register an address (amtp register)",
  ),
  description: flag("description", "string", "TEXT", "a note for admins"),
};

/** Admin subcommands. */
export const ADMIN_SUBCOMMANDS: Record<string, SubcommandSpec> = {
  sysinfo: { command: "admin_sysinfo", help: "system information" },
  module: {
    command: "admin_package_install",
    positional: ["install|list|default|rollback"],
    flags: {
      key: flag("author_key", "string", "PUB", ADMIN_MODULE_FLAGS.key.help),
      yes: flag("yes", "switch", undefined, ADMIN_MODULE_FLAGS.yes.help),
      "allow-unsigned": flag(
        "allow_unsigned",
        "switch",
        undefined,
        ADMIN_MODULE_FLAGS["allow-unsigned"].help,
      ),
      default: flag(
        "default",
        "switch",
        undefined,
        ADMIN_MODULE_FLAGS.default.help,
      ),
    },
    help:
      "signed module packages: install FILE|https://URL|npm:NAME@VERSION (shows what it asks for, then asks), list (author keys, rights), default NAME VERSION, rollback NAME",
  },
  domains: { command: "admin_get_domains", flags: LIST, help: "list domains" },
  "add-domain": {
    command: "admin_add_domain",
    positional: ["domain"],
    flags: DOMAIN_FLAGS,
    help: "host a domain",
  },
  "set-domain": {
    command: "admin_set_domain",
    positional: ["domain"],
    flags: DOMAIN_FLAGS,
    help: "change a domain",
  },
  "del-domain": {
    command: "admin_del_domain",
    positional: ["domain"],
    flags: {
      force: flag(
        "force",
        "switch",
        undefined,
        "also delete its users and aliases",
      ),
    },
    help: "stop hosting a domain",
  },
  users: {
    command: "admin_get_users",
    flags: {
      ...LIST,
      domain: flag("domain", "string", "DOMAIN", "only this domain"),
    },
    help: "list users",
  },
  "add-user": {
    command: "admin_add_user",
    positional: ["address"],
    flags: {
      key: flag(
        "public_key",
        "pubkey",
        "KEY",
        "the user's public key (a file, or a name from amtp keygen)",
      ),
      name: flag("name", "string", "NAME", "display name"),
      quota: flag(
        "quota",
        "int",
        "BYTES",
        "mailbox quota (0: the server's default)",
      ),
      "key-label": flag("key_label", "string", "LABEL", "a name for the key"),
    },
    help: "add a user",
  },
  "set-user": {
    command: "admin_set_user",
    positional: ["address"],
    flags: {
      name: flag("name", "string", "NAME", "display name"),
      disabled: flag(
        "disabled",
        "bool",
        "true|false",
        "disable (logs out) or enable",
      ),
      quota: flag("quota", "int", "BYTES", "mailbox quota"),
      "add-key": flag("add_key", "pubkey", "KEY", "add a login key"),
      "del-key": flag("del_key", "string", "KEY_ID", "remove a login key"),
    },
    help: "change a user",
  },
  "del-user": {
    command: "admin_del_user",
    positional: ["address"],
    help: "delete a user",
  },
  aliases: {
    command: "admin_get_aliases",
    flags: {
      ...LIST,
      domain: flag("domain", "string", "DOMAIN", "only this domain"),
    },
    help: "list aliases",
  },
  "add-alias": {
    command: "admin_add_alias",
    positional: ["address"],
    flags: {
      to: flag("recipients", "list", "A,B", "where mail to the alias goes"),
      description: flag("description", "string", "TEXT", "a note for admins"),
    },
    help: "add an alias",
  },
  "set-alias": {
    command: "admin_set_alias",
    positional: ["address"],
    flags: {
      to: flag("recipients", "list", "A,B", "where mail to the alias goes"),
      description: flag("description", "string", "TEXT", "a note for admins"),
    },
    help: "change an alias",
  },
  "del-alias": {
    command: "admin_del_alias",
    positional: ["address"],
    help: "delete an alias",
  },
  catchall: {
    command: "admin_get_catchall",
    positional: ["domain"],
    help: "where mail to unknown addresses of a domain goes",
  },
  "set-catchall": {
    command: "admin_set_catchall",
    positional: ["domain"],
    flags: {
      to: flag("recipients", "list", "A,B", 'the recipients ("" turns it off)'),
    },
    help: "send mail to unknown addresses of a domain somewhere",
  },
  admins: { command: "admin_get_admins", flags: LIST, help: "list admins" },
  "add-admin": {
    command: "admin_add_admin",
    positional: ["name"],
    flags: {
      key: flag("public_key", "pubkey", "KEY", "the admin's public key"),
      "key-label": flag("key_label", "string", "LABEL", "a name for the key"),
    },
    help: "add an admin",
  },
  "set-admin": {
    command: "admin_set_admin",
    positional: ["name"],
    flags: {
      disabled: flag(
        "disabled",
        "bool",
        "true|false",
        "disable (logs out) or enable",
      ),
      "add-key": flag("add_key", "pubkey", "KEY", "add a login key"),
      "del-key": flag("del_key", "string", "KEY_ID", "remove a login key"),
    },
    help: "change an admin",
  },
  "del-admin": {
    command: "admin_del_admin",
    positional: ["name"],
    help: "delete an admin",
  },
  blocks: { command: "admin_get_blocks", help: "failed-login blocks" },
  unblock: {
    command: "admin_del_block",
    positional: ["scope", "id"],
    help: "lift a block (SCOPE: account, ip or account_ip)",
  },
  modules: {
    command: "admin_get_modules",
    help: "modules with state and figures",
  },
  ...Object.fromEntries(
    MODULE_VERBS.map(([name, command, help]) => [
      name,
      { command, positional: ["name", "version"], help },
    ]),
  ),
  "module-isolation": {
    command: "admin_set_module_isolation",
    positional: ["name", "version", "isolation"],
    help: "run a module version in a worker, a process or remote",
  },
  "add-module-key": {
    command: "admin_add_module_key",
    positional: ["name", "version"],
    flags: {
      key: flag(
        "public_key",
        "pubkey",
        "KEY",
        "the module's Ed25519 public key (file, or a key amtp keygen made)",
      ),
      "key-label": flag("key_label", "string", "LABEL", "a name for it"),
    },
    help:
      "let a remote module of this name and version log in with a key (deno task module-run)",
  },
  "module-keys": {
    command: "admin_get_module_keys",
    flags: {
      name: flag("name", "string", "NAME", "only this module's keys"),
    },
    help: "the keys remote modules log in with",
  },
  "del-module-key": {
    command: "admin_del_module_key",
    positional: ["name", "version", "key_id"],
    help: "remove a remote module's key (its links are closed)",
  },
  queue: {
    command: "admin_get_queue",
    flags: {
      domain: flag(
        "domain",
        "string",
        "DOMAIN",
        "only deliveries to this domain",
      ),
      limit: flag("limit", "int", "N", "at most N"),
    },
    help: "remote deliveries waiting",
  },
  "retry-queue": {
    command: "admin_retry_queue",
    positional: ["id"],
    help: "try a queued delivery now",
  },
  "del-queue": {
    command: "admin_del_queue",
    positional: ["id"],
    help: "drop a queued delivery (no bounce)",
  },
  "policy-reports": {
    command: "admin_get_policy_reports",
    help: "violations of other domains' delivery policies seen",
  },
  invite: {
    command: "admin_add_invitation",
    positional: ["address"],
    flags: {
      name: flag("name", "string", "NAME", "display name of the new account"),
      quota: flag("quota", "int", "BYTES", "mailbox quota (0: default)"),
      expires: flag(
        "expires_in",
        "int",
        "SECONDS",
        "valid for (60 to 2592000; default 604800, 7 days)",
      ),
    },
    help:
      "invite a person: a one-time code (and web link) their own device redeems with its key",
  },
  invitations: {
    command: "admin_get_invitations",
    flags: {
      address: flag("address", "string", "ADDRESS", "only for this address"),
    },
    help: "open invitations",
  },
  "del-invitation": {
    command: "admin_del_invitation",
    positional: ["id"],
    help: "withdraw an invitation",
  },
};

/** User subcommands. */
export const USER_SUBCOMMANDS: Record<string, SubcommandSpec> = {
  serverinfo: { command: "user_serverinfo", help: "server information" },
  userinfo: {
    command: "user_userinfo",
    positional: ["address"],
    flags: {
      fresh: flag(
        "fresh",
        "switch",
        undefined,
        "bypass the cache of remote profiles",
      ),
    },
    help: "someone's public profile",
  },
  profile: {
    command: "user_set_profile",
    flags: {
      name: flag("name", "string", "NAME", "your display name"),
      photo: flag("photo", "file", "FILE", "your photo (at most 48 KiB)"),
      "photo-type": flag(
        "photo_type",
        "string",
        "TYPE",
        "image/png, image/jpeg, image/webp or image/gif",
      ),
      "remove-photo": flag(
        "remove_photo",
        "switch",
        undefined,
        "remove your photo",
      ),
    },
    help: "change your profile",
  },
  keys: { command: "user_get_keys", help: "your login keys" },
  "add-key": {
    command: "user_add_key",
    flags: {
      key: flag(
        "public_key",
        "pubkey",
        "KEY",
        "the public key of another device",
      ),
      "key-label": flag("key_label", "string", "LABEL", "a name for it"),
    },
    help: "add a login key",
  },
  "del-key": {
    command: "user_del_key",
    positional: ["key_id"],
    help: "remove a login key",
  },
  sessions: { command: "user_get_sessions", help: "your logged-in sessions" },
  "del-session": {
    command: "user_del_session",
    positional: ["session_id"],
    help: "log a session out",
  },
  "invite-device": {
    command: "user_add_invitation",
    flags: {
      expires: flag(
        "expires_in",
        "int",
        "SECONDS",
        "valid for (60 to 2592000; default 3600)",
      ),
    },
    help: "a one-time code another device of yours redeems with its own key",
  },
  invitations: {
    command: "user_get_invitations",
    help: "your open device invitations",
  },
  "del-invitation": {
    command: "user_del_invitation",
    positional: ["id"],
    help: "withdraw a device invitation",
  },
};

/** The flags of a subcommand as the argument parser declares them. */
export function subcommandFlags(
  spec: SubcommandSpec | undefined,
): Record<string, FlagSpec> {
  return Object.fromEntries(
    Object.entries(spec?.flags ?? {}).map(([name, f]) => [
      name,
      { value: f.value, help: f.help },
    ]),
  );
}

/** One line of usage: `add-user ADDRESS [--key KEY] ...`. */
export function subcommandUsage(name: string, spec: SubcommandSpec): string {
  return [
    name,
    ...(spec.positional ?? []).map((p) => p.toUpperCase()),
    ...Object.entries(spec.flags ?? {}).map(([flag, f]) =>
      `[--${flag}${f.value ? ` ${f.value}` : ""}]`
    ),
  ].join(" ");
}

/** Build a command's parameters from the arguments after the subcommand. */
export async function buildParams(
  spec: SubcommandSpec,
  args: Args,
): Promise<Record<string, unknown>> {
  const params: Record<string, unknown> = {};
  const positional = spec.positional ?? [];
  if (args.positional.length !== positional.length) {
    throw new UsageError(
      `${
        args.positional.length < positional.length ? "missing" : "too many"
      } arguments: ${
        positional.map((p) => p.toUpperCase()).join(" ") || "none"
      } expected`,
    );
  }
  positional.forEach((name, i) => params[name] = args.positional[i]);
  for (const [name, value] of args.flags) {
    const mapping = spec.flags?.[name];
    if (!mapping) continue;
    const { param, type } = mapping;
    switch (type) {
      case "string":
        params[param] = value;
        break;
      case "int":
        if (!/^\d+$/.test(value)) {
          throw new UsageError(`--${name} takes a number`);
        }
        params[param] = Number(value);
        break;
      case "bool":
        if (value !== "true" && value !== "false") {
          throw new UsageError(`--${name} takes true or false`);
        }
        params[param] = value === "true";
        break;
      case "switch":
        params[param] = true;
        break;
      case "list":
        params[param] = value.split(",").map((s) => s.trim()).filter(Boolean);
        break;
      case "file":
        params[param] = await Deno.readFile(value);
        break;
      case "pubkey": {
        const key = await readPublicKey(await keyFile(value, "public"));
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
