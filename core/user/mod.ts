/**
 * User commands (`user_*`) after login, and self-registration.
 *
 * @module
 */

import type {
  AccountStore,
  PublicKeyRecord,
  UserRecord,
} from "../../kv/mod.ts";
import {
  accountName,
  addKey,
  KEY_PARAMS,
  keyView,
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

/** The user commands. */
export function userCommands(deps: UserDeps): Command[] {
  const { accounts, tokens } = deps;
  const self = async (address: string): Promise<UserRecord> => {
    const user = await accounts.getUser(address);
    if (!user || user.disabled) {
      throw new ProtocolError(
        ErrorCode.NOT_LOGGED_IN,
        "the account no longer exists or is disabled",
      );
    }
    return user;
  };
  const save = async (user: UserRecord) => {
    user.updated = new Date();
    await accounts.putUser(user);
  };
  return [
    defineCommand({
      name: "user_register",
      auth: "none",
      params: {
        address: { type: "string", max: 320 },
        name: { type: "string", optional: true, max: 128 },
        ...KEY_PARAMS,
      },
      handler: async (p, ctx) => {
        const address = accountName("user", p.address);
        const domain = await accounts.getDomain(splitAddress(address)[1]);
        if (!domain?.registration_open) {
          throw new ProtocolError(
            ErrorCode.REGISTRATION_CLOSED,
            `registration is not open for ${splitAddress(address)[1]}`,
          );
        }
        const key = await makeKeyRecord(p.algorithm, p.public_key, p.key_label);
        const now = new Date();
        const result = await accounts.addUser({
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
    }),
    defineCommand({
      name: "user_serverinfo",
      auth: "user",
      params: {},
      handler: async (_p, ctx) => {
        const user = await self(ctx.caller!.name);
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
    }),
    defineCommand({
      name: "user_logout",
      auth: "user",
      params: {},
      handler: async (_p, ctx) => {
        await tokens.revoke(ctx.caller!.tokenHash);
        return { logged_out: true };
      },
    }),
    defineCommand({
      name: "user_userinfo",
      auth: "user",
      params: {
        address: { type: "string", max: 320 },
        fresh: { type: "bool", optional: true },
      },
      handler: async (p, ctx) => {
        const address = accountName("user", p.address);
        const [, domain] = splitAddress(address);
        if (!(await accounts.getDomain(domain))) {
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
        const profile = await localProfile(accounts, address);
        if (!profile) {
          throw new ProtocolError(ErrorCode.NOT_FOUND, `no user ${address}`);
        }
        return profile;
      },
    }),
    defineCommand({
      name: "user_set_profile",
      auth: "user",
      params: {
        name: { type: "string", optional: true, max: 128 },
        photo: { type: "binary", optional: true },
        photo_type: { type: "string", optional: true, max: 32 },
        remove_photo: { type: "bool", optional: true },
      },
      handler: async (p, ctx) => {
        const user = await self(ctx.caller!.name);
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
          await accounts.setPhoto(user.address, {
            type: p.photo_type,
            data: p.photo,
          });
        } else if (p.remove_photo) {
          await accounts.setPhoto(user.address, null);
        }
        if (p.name !== undefined) user.name = p.name;
        await save(user);
        return await publicProfile(accounts, user);
      },
    }),
    defineCommand({
      name: "user_add_public_key",
      auth: "user",
      params: {
        algorithm: { type: "string", min: 1, max: 32 },
        key: { type: "binary", min: 16, max: 2048 },
        label: { type: "string", optional: true, max: 64 },
      },
      handler: async (p, ctx) => {
        const user = await self(ctx.caller!.name);
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
        await save(user);
        return { key_id: record.id };
      },
    }),
    defineCommand({
      name: "user_del_public_key",
      auth: "user",
      params: { key_id: { type: "string", max: 64 } },
      handler: async (p, ctx) => {
        const user = await self(ctx.caller!.name);
        const before = user.public_keys.length;
        user.public_keys = user.public_keys.filter((k) => k.id !== p.key_id);
        if (user.public_keys.length === before) {
          throw new ProtocolError(ErrorCode.NOT_FOUND, `no key ${p.key_id}`);
        }
        await save(user);
        return { key_id: p.key_id };
      },
    }),
    defineCommand({
      name: "user_get_keys",
      auth: "user",
      params: {},
      handler: async (_p, ctx) => {
        const user = await self(ctx.caller!.name);
        return { keys: user.keys.map(keyView) };
      },
    }),
    defineCommand({
      name: "user_add_key",
      auth: "user",
      params: KEY_PARAMS,
      handler: async (p, ctx) => {
        const user = await self(ctx.caller!.name);
        const key = await makeKeyRecord(p.algorithm, p.public_key, p.key_label);
        user.keys = addKey(user.keys, key);
        await save(user);
        return keyView(key);
      },
    }),
    defineCommand({
      name: "user_del_key",
      auth: "user",
      params: { key_id: { type: "string", max: 64 } },
      handler: async (p, ctx) => {
        const user = await self(ctx.caller!.name);
        user.keys = removeKey(user.keys, p.key_id);
        await save(user);
        return { key_id: p.key_id };
      },
    }),
    defineCommand({
      name: "user_get_sessions",
      auth: "user",
      params: {},
      handler: async (_p, ctx) => {
        const list = await tokens.list("user", ctx.caller!.name);
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
    }),
    defineCommand({
      name: "user_del_session",
      auth: "user",
      params: { session_id: { type: "string", min: 16, max: 16 } },
      handler: async (p, ctx) => {
        const list = await tokens.list("user", ctx.caller!.name);
        const target = list.find((t) => t.hash.startsWith(p.session_id));
        if (!target) {
          throw new ProtocolError(
            ErrorCode.NOT_FOUND,
            `no session ${p.session_id}`,
          );
        }
        await tokens.revoke(target.hash);
        return { session_id: p.session_id };
      },
    }),
  ];
}
