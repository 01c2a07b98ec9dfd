/**
 * The login guard: failed logins slow attackers down without locking the
 * owner out (PROTOCOL.md §7.3).
 *
 * - **(account, source)**: after {@link FREE_PAIR_FAILURES} failures of one
 *   account from one source, that source is blocked for that account for 1,
 *   2, 4, … seconds, up to an hour. Other sources are not affected.
 * - **source**: after {@link FREE_SOURCE_FAILURES} failures from one source
 *   across accounts, the source is blocked for every account the same way.
 * - **account**: after {@link FREE_ACCOUNT_FAILURES} failures of one account
 *   from all sources together, sources that never logged into the account are
 *   slowed down (1, 2, 4, … seconds, at most {@link MAX_SLOWDOWN_SECONDS});
 *   the {@link KNOWN_SOURCES} sources it last logged in from successfully
 *   (kept as keyed hashes) are never slowed down.
 *
 * A source is the client's IPv4 address, or the /64 network of an IPv6
 * address (one host holds a whole /64). A source that stands for no network
 * address (a module's Unix socket, `unix`) is checked with `perSource: false`:
 * its failures count in the (account, source) and account scopes only, so
 * failures of one account never block another. A successful login clears its
 * (account, source) record and remembers the source. Only a wrong answer to a
 * pending challenge counts; an answer without a pending challenge does not.
 *
 * @module
 */

import { createHmac } from "node:crypto";
import {
  type FailureRecord,
  type FailureScope,
  type FailureStore,
  type GuardRecords,
  type KnownSourcesRecord,
  pairId,
} from "../../kv/mod.ts";
import { ErrorCode, ProtocolError } from "../protocol/mod.ts";

/** Failures of one account from one source before that pair is blocked. */
export const FREE_PAIR_FAILURES = 5;
/** Failures from one source, across accounts, before the source is blocked. */
export const FREE_SOURCE_FAILURES = 20;
/** Failures of one account, from every source, before unknown sources are slowed down. */
export const FREE_ACCOUNT_FAILURES = 10;
/** Longest block in seconds. */
export const MAX_BLOCK_SECONDS = 3600;
/** Longest account-wide slow-down in seconds. */
export const MAX_SLOWDOWN_SECONDS = 60;
/** Sources remembered per account. */
export const KNOWN_SOURCES = 8;
/** A known source's entry is refreshed after this long (keeps the most recent first). */
const REFRESH_KNOWN_MS = 7 * 86_400_000;

const POLICY: Record<FailureScope, { free: number; max: number }> = {
  account_ip: { free: FREE_PAIR_FAILURES, max: MAX_BLOCK_SECONDS },
  ip: { free: FREE_SOURCE_FAILURES, max: MAX_BLOCK_SECONDS },
  account: { free: FREE_ACCOUNT_FAILURES, max: MAX_SLOWDOWN_SECONDS },
};

/** The scopes an admin may lift, as `admin_del_block` names them. */
export const FAILURE_SCOPES: readonly FailureScope[] = [
  "account",
  "ip",
  "account_ip",
];

function ipv6Groups(text: string): number[] | null {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  const parse = (part: string) =>
    part === ""
      ? []
      : part.split(":").map((g) =>
        /^[0-9a-f]{1,4}$/i.test(g) ? parseInt(g, 16) : NaN
      );
  let head = parse(halves[0]);
  let tail = halves.length === 2 ? parse(halves[1]) : [];
  // A final dotted IPv4 part is two groups.
  const last = halves.length === 2 ? halves[1] : halves[0];
  const v4 = /(?:^|:)(\d+\.\d+\.\d+\.\d+)$/.exec(last);
  if (v4) {
    const octets = v4[1].split(".").map(Number);
    if (octets.some((o) => o > 255)) return null;
    const groups = [octets[0] << 8 | octets[1], octets[2] << 8 | octets[3]];
    if (halves.length === 2) tail = [...tail.slice(0, -1), ...groups];
    else head = [...head.slice(0, -1), ...groups];
  }
  const fill = 8 - head.length - tail.length;
  if (halves.length === 1 ? fill !== 0 : fill < 1) return null;
  const groups = [...head, ...Array(Math.max(0, fill)).fill(0), ...tail];
  return groups.some((g) => Number.isNaN(g)) ? null : groups;
}

/**
 * The source a client address counts as: an IPv4 address as it is (also when
 * IPv4-mapped), an IPv6 address as its /64 (`2001:db8:0:1::/64`; a /64 given
 * that way is its own source).
 */
export function sourceOf(address: string): string {
  const bare = address.trim().toLowerCase().replace(/^\[|\]$/g, "")
    .replace(/%.*$/, "").replace(/\/64$/, "");
  if (/^\d+\.\d+\.\d+\.\d+$/.test(bare)) return bare;
  const groups = bare.includes(":") ? ipv6Groups(bare) : null;
  if (!groups) return bare.slice(0, 64);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return [groups[6] >> 8, groups[6] & 255, groups[7] >> 8, groups[7] & 255]
      .join(".");
  }
  return `${groups.slice(0, 4).map((g) => g.toString(16)).join(":")}::/64`;
}

/** What {@link LoginGuard.check} found, for {@link LoginGuard.failed} and {@link LoginGuard.succeeded}. */
export interface GuardState {
  /** The account (`admin:NAME` or `user:ADDRESS`). */
  account: string;
  /** The source. */
  source: string;
  /** The failure records read. */
  records: GuardRecords;
  /** Whether failures count in the source's own (`ip`) scope. */
  perSource: boolean;
  /** The account's known sources. */
  known: KnownSourcesRecord | null;
}

/** Options of {@link LoginGuard}. */
export interface LoginGuardOptions {
  /** The records. */
  store: FailureStore;
  /** Key of the source hashes (the server's login secret). */
  secret: Uint8Array;
  /** Clock in epoch milliseconds (tests). */
  now?: () => number;
}

/** Source hashes kept in memory. */
const HASH_CACHE_MAX = 10_000;

/** Checks and counts login attempts. */
export class LoginGuard {
  readonly #store: FailureStore;
  readonly #secret: Uint8Array;
  readonly #now: () => number;
  readonly #hashes = new Map<string, string>();

  /** Create the guard. */
  constructor(options: LoginGuardOptions) {
    this.#store = options.store;
    this.#secret = options.secret;
    this.#now = options.now ?? Date.now;
  }

  /** The keyed hash of a source for an account (kept: logins repeat). */
  #hash(account: string, source: string): string {
    const id = `${account}\n${source}`;
    let hash = this.#hashes.get(id);
    if (!hash) {
      hash = createHmac("sha256", this.#secret)
        .update(`known-source\n${id}`)
        .digest("hex").slice(0, 32);
      if (this.#hashes.size >= HASH_CACHE_MAX) this.#hashes.clear();
      this.#hashes.set(id, hash);
    }
    return hash;
  }

  /** The state's source among the account's known sources, if it is. */
  #knownEntry(state: GuardState): { hash: string; last: Date } | undefined {
    if (!state.known?.sources.length) return undefined;
    const hash = this.#hash(state.account, state.source);
    return state.known.sources.find((s) => s.hash === hash);
  }

  #refuseBlocked(state: GuardState): void {
    const now = this.#now();
    const { pair, ip, account } = state.records;
    let until = Math.max(pair?.blocked_until ?? 0, ip?.blocked_until ?? 0);
    if ((account?.blocked_until ?? 0) > Math.max(now, until)) {
      // The account-wide slow-down spares the sources it logged in from.
      if (!this.#knownEntry(state)) until = account!.blocked_until;
    }
    if (until > now) {
      const retry = Math.ceil((until - now) / 1000);
      throw new ProtocolError(
        ErrorCode.LOGIN_BLOCKED,
        `too many failed logins: try again in ${retry} s`,
        { retry_after: retry },
      );
    }
  }

  /**
   * Refuse an attempt of `account` from `remoteAddr` when it is blocked.
   * `perSource: false` (a source that is no network address) leaves the
   * source's own scope out of what {@link failed} counts.
   *
   * @throws {ProtocolError} LOGIN_BLOCKED with `data.retry_after`
   */
  async check(
    account: string,
    remoteAddr: string,
    options: { perSource?: boolean } = {},
  ): Promise<GuardState> {
    const source = sourceOf(remoteAddr);
    const { known, ...records } = await this.#store.guardRecords(
      account,
      source,
    );
    const state = {
      account,
      source,
      records,
      known,
      perSource: options.perSource ?? true,
    };
    this.#refuseBlocked(state);
    return state;
  }

  /**
   * Check again (the answer to a challenge): blocks may have begun since.
   *
   * @throws {ProtocolError} LOGIN_BLOCKED with `data.retry_after`
   */
  async recheck(state: GuardState): Promise<GuardState> {
    const { known, ...records } = await this.#store.guardRecords(
      state.account,
      state.source,
    );
    const fresh = { ...state, records, known };
    this.#refuseBlocked(fresh);
    return fresh;
  }

  /** Count a wrong answer in the three scopes (two without `perSource`). */
  async failed(state: GuardState): Promise<void> {
    const now = this.#now();
    await this.#store.count([
      { scope: "account_ip", id: pairId(state.account, state.source) },
      ...(state.perSource ? [{ scope: "ip" as const, id: state.source }] : []),
      { scope: "account", id: state.account },
    ], (scope, old) => {
      const failures = (old?.failures ?? 0) + 1;
      const { free, max } = POLICY[scope];
      return {
        scope,
        id: scope === "account_ip"
          ? pairId(state.account, state.source)
          : scope === "ip"
          ? state.source
          : state.account,
        failures,
        blocked_until: failures > free
          ? now + 1000 * Math.min(max, 2 ** Math.min(30, failures - free - 1))
          : 0,
        last: new Date(now),
      } satisfies FailureRecord;
    });
  }

  /** After a successful login: clear the pair's failures, remember the source. */
  async succeeded(state: GuardState): Promise<void> {
    const now = this.#now();
    const entry = this.#knownEntry(state);
    await Promise.all([
      state.records.pair
        ? this.#store.delete(
          "account_ip",
          pairId(state.account, state.source),
        )
        : undefined,
      !entry || now - entry.last.getTime() > REFRESH_KNOWN_MS
        ? this.#store.remember(
          state.account,
          this.#hash(state.account, state.source),
          { max: KNOWN_SOURCES, now: new Date(now) },
        )
        : undefined,
    ]);
  }

  /** Current records, for admins. */
  blocks(): Promise<FailureRecord[]> {
    return this.#store.list();
  }

  /**
   * Lift blocks of a scope (see FailureStore.unblock); an `ip` id may be any
   * address of the source. Returns how many records went.
   */
  unblock(scope: FailureScope, id: string): Promise<number> {
    return this.#store.unblock(scope, scope === "ip" ? sourceOf(id) : id);
  }
}
