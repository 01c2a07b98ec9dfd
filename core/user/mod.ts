/**
 * User commands (`user_*`) after login, self-registration, invitations and
 * push subscriptions.
 *
 * @module
 */

import type {
  AccountStore,
  InvitationStore,
  PublicKeyRecord,
  UserRecord,
} from "../../kv/mod.ts";
import {
  accountName,
  addKey,
  KEY_PARAMS,
  keyView,
  type LoginService,
  makeKeyRecord,
  removeKey,
  type TokenService,
} from "../auth/mod.ts";
import { splitAddress } from "../../shared/identity.ts";
import {
  type Command,
  defineCommand,
  ErrorCode,
  ProtocolError,
} from "../protocol/mod.ts";
import type { WebPush } from "../push/mod.ts";
import { invitationUserCommands } from "./invitations.ts";
import { pushUserCommands } from "./push.ts";
import {
  APP_NAME,
  APP_VERSION,
  PROTOCOL_VERSION,
} from "../../shared/version.ts";

/** Largest profile photo in bytes (one KV value). */
export const MAX_PHOTO = 48 * 1024;
/** Photo types accepted. */
export const PHOTO_TYPES = [
  "image/png",
  "image/jpeg",
  "image/webp",
  "image/gif",
];
/** End-to-end public keys one user may publish. */
export const MAX_PUBLIC_KEYS = 32;

/** Dependencies of the user commands. */
export interface UserDeps {
  /** Account records. */
  accounts: AccountStore;
  /** Tokens. */
  tokens: TokenService;
  /** The server's host name. */
  hostname: string;
  /** Limits announced to clients. */
  limits: Record<string, number>;
  /** Modules available. */
  modules: () => { name: string; versions: string[]; default?: string }[];
  /** Invitations (a user invites another device of their own). */
  invitations: InvitationStore;
  /** Logins (its guard limits guesses of invitation codes). */
  login?: LoginService;
  /** Clock of invitations in epoch milliseconds (tests move it). */
  now?: () => number;
  /** Web Push, when the server sends notifications. */
  push?: WebPush;
  /** The web app's address (invitation links), when it is served. */
  webUrl?: () => string | undefined;
  /** A remote user's profile through federation (asking as `asDomain`). */
  remoteProfile?: (
    address: string,
    asDomain: string,
    fresh?: boolean,
  ) => Promise<Record<string, unknown>>;
}

function randomId(): string {
  return Array.from(
    crypto.getRandomValues(new Uint8Array(8)),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** The public profile of a user, as `user_userinfo` returns it. */
export async function publicProfile(
  accounts: AccountStore,
  user: UserRecord,
): Promise<Record<string, unknown>> {
  const photo = await accounts.getPhoto(user.address);
  return {
    address: user.address,
    name: user.name,
    photo: photo?.data ?? null,
    photo_type: photo?.type ?? null,
    public_keys: user.public_keys.map((k) => ({
      key_id: k.id,
      label: k.label,
      algorithm: k.algorithm,
      key: k.key,
      created: k.created,
    })),
  };
}

/** The public profile of a local user, or null when there is none or it is disabled. */
export async function localProfile(
  accounts: AccountStore,
  address: string,
): Promise<Record<string, unknown> | null> {
  const user = await accounts.getUser(address);
  return user && !user.disabled ? await publicProfile(accounts, user) : null;
}

/** The caller's own account; NOT_LOGGED_IN when it is gone or disabled. */
async function self(
  accounts: AccountStore,
  address: string,
): Promise<UserRecord> {
  const user = await accounts.getUser(address);
  if (!user || user.disabled) {
    throw new ProtocolError(
      ErrorCode.NOT_LOGGED_IN,
      "the account no longer exists or is disabled",
    );
  }
  return user;
}

/** Store a changed account. */
async function save(accounts: AccountStore, user: UserRecord): Promise<void> {
  user.updated = new Date();
  await accounts.putUser(user);
}

/** The user commands. */
export function userCommands(deps: UserDeps): Command[] {
  return [
    userRegister,
    userServerinfo,
    userLogout,
    userUserinfo,
    userSetProfile,
    userAddPublicKey,
    userDelPublicKey,
    userGetKeys,
    userAddKey,
    userDelKey,
    userGetSessions,
    userDelSession,
  ].map((command) => command(deps)).concat(
    invitationUserCommands(deps),
    deps.push ? pushUserCommands(deps.push) : [],
  );
}

/** `user_register`. */
function userRegister(deps: UserDeps): Command {
  return defineCommand({
    name: "user_register",
    auth: "none",
    params: {
      address: { type: "string", max: 320 },
      name: { type: "string", optional: true, max: 128 },
      ...KEY_PARAMS,
    },
    handler: async (p, ctx) => {
      const address = accountName("user", p.address);
      const domain = await deps.accounts.getDomain(splitAddress(address)[1]);
      if (!domain?.registration_open) {
        throw new ProtocolError(
          ErrorCode.REGISTRATION_CLOSED,
          `registration is not open for ${splitAddress(address)[1]}`,
        );
      }
      const key = await makeKeyRecord(p.algorithm, p.public_key, p.key_label);
      const now = new Date();
      const result = await deps.accounts.addUser({
        address,
        name: p.name ?? "",
        keys: [key],
        public_keys: [],
        disabled: false,
        quota: 0,
        created: now,
        updated: now,
      });
      if (result !== "ok") {
        throw new ProtocolError(
          ErrorCode.ALREADY_EXISTS,
          `address ${address} is taken`,
        );
      }
      ctx.log.info("user_registered", {
        address,
        ip: ctx.session.remoteAddr,
      });
      return { address, key_id: key.id };
    },
  });
}

/** `user_serverinfo`. */
function userServerinfo(deps: UserDeps): Command {
  return defineCommand({
    name: "user_serverinfo",
    auth: "user",
    params: {},
    handler: async (_p, ctx) => {
      const user = await self(deps.accounts, ctx.caller!.name);
      return {
        app_name: APP_NAME,
        app_version: APP_VERSION,
        protocol_version: PROTOCOL_VERSION,
        hostname: deps.hostname,
        limits: deps.limits,
        modules: deps.modules(),
        address: user.address,
        quota: user.quota,
      };
    },
  });
}

/** `user_logout`. */
function userLogout(deps: UserDeps): Command {
  return defineCommand({
    name: "user_logout",
    auth: "user",
    params: {},
    handler: async (_p, ctx) => {
      await deps.tokens.revoke(ctx.caller!.tokenHash);
      return { logged_out: true };
    },
  });
}

/** `user_userinfo`. */
function userUserinfo(deps: UserDeps): Command {
  return defineCommand({
    name: "user_userinfo",
    auth: "user",
    params: {
      address: { type: "string", max: 320 },
      fresh: { type: "bool", optional: true },
    },
    handler: async (p, ctx) => {
      const address = accountName("user", p.address);
      const [, domain] = splitAddress(address);
      if (!(await deps.accounts.getDomain(domain))) {
        if (!deps.remoteProfile) {
          throw new ProtocolError(
            ErrorCode.UNKNOWN_DOMAIN,
            `${domain} is not hosted on this server`,
          );
        }
        return await deps.remoteProfile(
          address,
          splitAddress(ctx.caller!.name)[1],
          p.fresh === true,
        );
      }
      const profile = await localProfile(deps.accounts, address);
      if (!profile) {
        throw new ProtocolError(ErrorCode.NOT_FOUND, `no user ${address}`);
      }
      return profile;
    },
  });
}

/** `user_set_profile`. */
function userSetProfile(deps: UserDeps): Command {
  return defineCommand({
    name: "user_set_profile",
    auth: "user",
    params: {
      name: { type: "string", optional: true, max: 128 },
      photo: { type: "binary", optional: true },
      photo_type: { type: "string", optional: true, max: 32 },
      remove_photo: { type: "bool", optional: true },
    },
    handler: async (p, ctx) => {
      const user = await self(deps.accounts, ctx.caller!.name);
      if (p.photo) {
        if (p.photo.byteLength > MAX_PHOTO) {
          throw new ProtocolError(
            ErrorCode.LIMIT_EXCEEDED,
            `a photo is at most ${MAX_PHOTO} bytes`,
          );
        }
        if (!p.photo_type || !PHOTO_TYPES.includes(p.photo_type)) {
          throw new ProtocolError(
            ErrorCode.INVALID_PARAMETER,
            `parameter "photo_type" must be one of ${PHOTO_TYPES.join(", ")}`,
            { parameter: "photo_type" },
          );
        }
        await deps.accounts.setPhoto(user.address, {
          type: p.photo_type,
          data: p.photo,
        });
      } else if (p.remove_photo) {
        await deps.accounts.setPhoto(user.address, null);
      }
      if (p.name !== undefined) user.name = p.name;
      await save(deps.accounts, user);
      return await publicProfile(deps.accounts, user);
    },
  });
}

/** `user_add_public_key`. */
function userAddPublicKey(deps: UserDeps): Command {
  return defineCommand({
    name: "user_add_public_key",
    auth: "user",
    params: {
      algorithm: { type: "string", min: 1, max: 32 },
      key: { type: "binary", min: 16, max: 2048 },
      label: { type: "string", optional: true, max: 64 },
    },
    handler: async (p, ctx) => {
      const user = await self(deps.accounts, ctx.caller!.name);
      if (user.public_keys.length >= MAX_PUBLIC_KEYS) {
        throw new ProtocolError(
          ErrorCode.LIMIT_EXCEEDED,
          `at most ${MAX_PUBLIC_KEYS} public keys`,
        );
      }
      const record: PublicKeyRecord = {
        id: randomId(),
        label: p.label ?? "",
        algorithm: p.algorithm,
        key: p.key,
        created: new Date(),
      };
      user.public_keys.push(record);
      await save(deps.accounts, user);
      return { key_id: record.id };
    },
  });
}

/** `user_del_public_key`. */
function userDelPublicKey(deps: UserDeps): Command {
  return defineCommand({
    name: "user_del_public_key",
    auth: "user",
    params: { key_id: { type: "string", max: 64 } },
    handler: async (p, ctx) => {
      const user = await self(deps.accounts, ctx.caller!.name);
      const before = user.public_keys.length;
      user.public_keys = user.public_keys.filter((k) => k.id !== p.key_id);
      if (user.public_keys.length === before) {
        throw new ProtocolError(ErrorCode.NOT_FOUND, `no key ${p.key_id}`);
      }
      await save(deps.accounts, user);
      return { key_id: p.key_id };
    },
  });
}

/** `user_get_keys`. */
function userGetKeys(deps: UserDeps): Command {
  return defineCommand({
    name: "user_get_keys",
    auth: "user",
    params: {},
    handler: async (_p, ctx) => {
      const user = await self(deps.accounts, ctx.caller!.name);
      return { keys: user.keys.map(keyView) };
    },
  });
}

/** `user_add_key`. */
function userAddKey(deps: UserDeps): Command {
  return defineCommand({
    name: "user_add_key",
    auth: "user",
    params: KEY_PARAMS,
    handler: async (p, ctx) => {
      const user = await self(deps.accounts, ctx.caller!.name);
      const key = await makeKeyRecord(p.algorithm, p.public_key, p.key_label);
      user.keys = addKey(user.keys, key);
      await save(deps.accounts, user);
      return keyView(key);
    },
  });
}

/** `user_del_key`. */
function userDelKey(deps: UserDeps): Command {
  return defineCommand({
    name: "user_del_key",
    auth: "user",
    params: { key_id: { type: "string", max: 64 } },
    handler: async (p, ctx) => {
      const user = await self(deps.accounts, ctx.caller!.name);
      user.keys = removeKey(user.keys, p.key_id);
      await save(deps.accounts, user);
      return { key_id: p.key_id };
    },
  });
}

/** `user_get_sessions`. */
function userGetSessions(deps: UserDeps): Command {
  return defineCommand({
    name: "user_get_sessions",
    auth: "user",
    params: {},
    handler: async (_p, ctx) => {
      const list = await deps.tokens.list("user", ctx.caller!.name);
      return {
        sessions: list.map((t) => ({
          session_id: t.hash.slice(0, 16),
          label: t.label,
          ip: t.ip,
          created: t.created,
          expires: new Date(t.expires),
          current: t.hash === ctx.caller!.tokenHash,
        })),
      };
    },
  });
}

/** `user_del_session`. */
function userDelSession(deps: UserDeps): Command {
  return defineCommand({
    name: "user_del_session",
    auth: "user",
    params: { session_id: { type: "string", min: 16, max: 16 } },
    handler: async (p, ctx) => {
      const list = await deps.tokens.list("user", ctx.caller!.name);
      const target = list.find((t) => t.hash.startsWith(p.session_id));
      if (!target) {
        throw new ProtocolError(
          ErrorCode.NOT_FOUND,
          `no session ${p.session_id}`,
        );
      }
      await deps.tokens.revoke(target.hash);
      return { session_id: p.session_id };
    },
  });
}
