/**
 * Invitations (PROTOCOL.md §8.1, §9.1): a one-time code with an expiry for an
 * address, which the invited person's own device redeems with its public
 * key, so no private key is ever made on an admin's machine and carried
 * over. `account` invitations create the user; `device` invitations (made by
 * the user) add a login key to the user's account.
 *
 * @module
 */

import type {
  AccountStore,
  InvitationRecord,
  InvitationStore,
  UserRecord,
} from "../../kv/mod.ts";
import { ErrorCode, ProtocolError } from "../protocol/mod.ts";
import { addKey, makeKeyRecord } from "./keys.ts";

/** Characters of a code: RFC 4648 base32, lowercase (no 0/1/8/9 to misread). */
const ALPHABET = "abcdefghijklmnopqrstuvwxyz234567";
/** Characters of a code: 25 × 5 bits = 125 random bits. */
const CODE_LENGTH = 25;
/** Lifetime of an invitation when none is asked, in seconds (7 days). */
export const DEFAULT_INVITATION_TTL = 7 * 86_400;
/** Longest lifetime of an invitation, in seconds (30 days). */
export const MAX_INVITATION_TTL = 30 * 86_400;
/** Shortest lifetime of an invitation, in seconds. */
export const MIN_INVITATION_TTL = 60;
/** Open device invitations one user may hold. */
export const MAX_DEVICE_INVITATIONS = 5;

/** The `expires_in` parameter of the commands that make invitations. */
export const EXPIRES_PARAM = {
  expires_in: {
    type: "int",
    optional: true,
    min: MIN_INVITATION_TTL,
    max: MAX_INVITATION_TTL,
  },
} as const;

/**
 * A code in its canonical form: lowercase, without the dashes and spaces it
 * is shown with. Anything that is not 25 base32 characters is no code.
 */
export function normalizeCode(input: string): string | undefined {
  const code = input.toLowerCase().replace(/[\s-]/g, "");
  if (code.length !== CODE_LENGTH) return undefined;
  for (const c of code) if (!ALPHABET.includes(c)) return undefined;
  return code;
}

/** A code as shown to people: five groups of five. */
export function formatCode(code: string): string {
  return code.match(/.{1,5}/g)!.join("-");
}

async function hashOf(code: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(code),
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

function sameText(a: string, b: string): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

/** What an invitation looks like in answers (never the code). */
export function invitationView(r: InvitationRecord): Record<string, unknown> {
  return {
    id: r.id,
    kind: r.kind,
    address: r.address,
    name: r.name,
    quota: r.quota,
    created_by: r.created_by,
    created: r.created,
    expires: new Date(r.expires),
  };
}

/** What makes an invitation. */
export interface NewInvitation {
  /** `account` or `device`. */
  kind: InvitationRecord["kind"];
  /** Normalised address. */
  address: string;
  /** Display name of a new account. */
  name?: string;
  /** Quota of a new account (0: default). */
  quota?: number;
  /** `admin:NAME` or `user:ADDRESS`. */
  createdBy: string;
  /** Lifetime in seconds. */
  expiresIn?: number;
  /** Clock (epoch ms). */
  now?: number;
}

/** Make and store an invitation; answers its code (shown once) and record. */
export async function createInvitation(
  store: InvitationStore,
  spec: NewInvitation,
): Promise<{ code: string; record: InvitationRecord }> {
  const random = crypto.getRandomValues(new Uint8Array(CODE_LENGTH));
  const code = Array.from(random, (b) => ALPHABET[b & 31]).join("");
  const hash = await hashOf(code);
  const now = spec.now ?? Date.now();
  const record: InvitationRecord = {
    id: hash.slice(0, 16),
    hash,
    kind: spec.kind,
    address: spec.address,
    name: spec.name ?? "",
    quota: spec.quota ?? 0,
    created_by: spec.createdBy,
    created: new Date(now),
    expires: now + (spec.expiresIn ?? DEFAULT_INVITATION_TTL) * 1000,
  };
  await store.put(record);
  return { code, record };
}

const NO_INVITATION = () =>
  new ProtocolError(
    ErrorCode.NOT_FOUND,
    "no such invitation: the code is wrong, used or expired",
  );

/**
 * The live invitation of a code, without using it.
 *
 * @throws {ProtocolError} NOT_FOUND for a wrong, used or expired code (one
 *   answer for all three)
 */
export async function findInvitation(
  store: InvitationStore,
  input: string,
  now = Date.now(),
): Promise<InvitationRecord> {
  const code = normalizeCode(input);
  if (!code) throw NO_INVITATION();
  const hash = await hashOf(code);
  const record = await store.get(hash.slice(0, 16));
  if (!record || !sameText(record.hash, hash) || record.expires <= now) {
    throw NO_INVITATION();
  }
  return record;
}

/** What redeeming an invitation did. */
export interface Redeemed {
  /** The invitation used. */
  invitation: InvitationRecord;
  /** The account, created or with its new key. */
  user: UserRecord;
  /** The new login key's id. */
  keyId: string;
}

/**
 * Redeem a code with a public key: the invitation is used up in one atomic
 * step (a second use of the code fails), then the account is created (or
 * the key added to it).
 *
 * @throws {ProtocolError} NOT_FOUND (code, or the account of a device
 *   invitation gone), ALREADY_EXISTS (the address was taken meanwhile),
 *   UNKNOWN_DOMAIN, and the key errors (104, 105, 206)
 */
export async function redeemInvitation(
  deps: { invitations: InvitationStore; accounts: AccountStore },
  input: {
    code: string;
    algorithm: string;
    publicKey: Uint8Array;
    label?: string;
    name?: string;
  },
  now = Date.now(),
): Promise<Redeemed> {
  const found = await findInvitation(deps.invitations, input.code, now);
  // The key is checked before the code is used up: a bad key costs nothing.
  const key = await makeKeyRecord(
    input.algorithm,
    input.publicKey,
    input.label,
  );
  if (found.kind === "device") {
    const user = await deps.accounts.getUser(found.address);
    if (!user || user.disabled) {
      throw new ProtocolError(
        ErrorCode.NOT_FOUND,
        `the account ${found.address} no longer exists or is disabled`,
      );
    }
    user.keys = addKey(user.keys, key);
    const invitation = await deps.invitations.claim(found.id);
    if (!invitation) throw NO_INVITATION();
    user.updated = new Date(now);
    await deps.accounts.putUser(user);
    return { invitation, user, keyId: key.id };
  }
  if (await deps.accounts.getUser(found.address)) {
    throw new ProtocolError(
      ErrorCode.ALREADY_EXISTS,
      `address ${found.address} is taken`,
    );
  }
  const invitation = await deps.invitations.claim(found.id);
  if (!invitation) throw NO_INVITATION();
  const user: UserRecord = {
    address: invitation.address,
    name: input.name ?? invitation.name,
    keys: [key],
    public_keys: [],
    disabled: false,
    quota: invitation.quota,
    created: new Date(now),
    updated: new Date(now),
  };
  const result = await deps.accounts.addUser(user);
  if (result === "no_domain") {
    throw new ProtocolError(
      ErrorCode.UNKNOWN_DOMAIN,
      `the domain of ${invitation.address} is no longer hosted here`,
    );
  }
  if (result === "exists") {
    throw new ProtocolError(
      ErrorCode.ALREADY_EXISTS,
      `address ${invitation.address} is taken`,
    );
  }
  return { invitation, user, keyId: key.id };
}
