/**
 * The receiving side of server-to-server sessions: `s2s_hello`, `s2s_auth`,
 * `s2s_deliver`, `s2s_userinfo`. These commands are served only on peer
 * connections (ALPN `amtp/1`), never on client sessions.
 *
 * @module
 */

import type { AccountStore } from "../../kv/mod.ts";
import { toBase64 } from "../../shared/login/algorithms.ts";
import {
  IdentityError,
  normalizeAddress,
  splitAddress,
} from "../../shared/identity.ts";
import {
  type Command,
  defineCommand,
  ErrorCode,
  type HandlerContext,
  type Params,
  type ParamSchema,
  ProtocolError,
  validateParams,
} from "../protocol/mod.ts";
import { TokenBucket } from "../../shared/token_bucket.ts";
import type { DeliverToModule, RecipientResult } from "./delivery.ts";
import type { DnsResolver } from "./dns.ts";
import type { PolicyStore } from "./policy.ts";
import { verifyClaim } from "./proof.ts";

/** An authenticated peer, kept in the session's state. */
export interface Peer {
  /** The sending server's host name. */
  host: string;
  /** The domain it speaks for. */
  domain: string;
  /** The hosted domains this session may deliver to. */
  destinations: string[];
  /** When it authenticated (epoch milliseconds). */
  since: number;
}

/** What the inbound commands need. */
export interface InboundDeps {
  /** DNS. */
  dns: DnsResolver;
  /** This server's host name (what senders must sign for). */
  self: string;
  /** Other domains' delivery policies. */
  policies?: PolicyStore;
  /** Accounts (hosted domains, users). */
  accounts: AccountStore;
  /** Hand a delivery to a local module. */
  deliver: DeliverToModule;
  /** A local user's public profile. */
  profile: (address: string) => Promise<Record<string, unknown> | null>;
  /** Deliveries per second allowed from one remote server (burst: ten times). */
  peerRate?: number;
  /**
   * Milliseconds an authentication holds (then the peer authenticates again,
   * so a revoked key or a changed policy also ends live sessions).
   */
  sessionMaxMs?: number;
  /** Clock (tests). */
  now?: () => number;
}

/** Default of {@link InboundDeps.sessionMaxMs}: 15 minutes, plus a minute of grace for the sender's own clock. */
const SESSION_MAX_MS = 16 * 60_000;

/** Whether this server hosts `domain`. */
export async function hostsDomain(
  deps: InboundDeps,
  domain: string,
): Promise<boolean> {
  return await hosted(deps, domain);
}

async function hosted(deps: InboundDeps, domain: string): Promise<boolean> {
  return (await deps.accounts.getDomain(domain)) !== null;
}

/**
 * The peer a session authenticated as; S2S_NOT_AUTHENTICATED before, and once
 * the authentication is older than the session limit.
 */
function peerOf(ctx: HandlerContext, deps: InboundDeps): Peer {
  const peer = ctx.session.data.get("s2s_peer") as Peer | undefined;
  if (!peer) {
    throw new ProtocolError(
      ErrorCode.S2S_NOT_AUTHENTICATED,
      "authenticate with s2s_hello and s2s_auth first",
    );
  }
  const maxMs = deps.sessionMaxMs ?? SESSION_MAX_MS;
  if ((deps.now ?? Date.now)() - peer.since > maxMs) {
    ctx.session.data.delete("s2s_peer");
    throw new ProtocolError(
      ErrorCode.S2S_NOT_AUTHENTICATED,
      `the authentication is older than ${
        Math.round(maxMs / 1000)
      } s: authenticate again`,
    );
  }
  return peer;
}

/** An address normalized, or undefined when it is not one. */
export function addressOf(input: string): string | undefined {
  return address(input);
}

function address(input: string): string | undefined {
  try {
    return normalizeAddress(input);
  } catch (error) {
    if (error instanceof IdentityError) return undefined;
    throw error;
  }
}

/** The server-to-server commands. */
export function inboundCommands(deps: InboundDeps): Command[] {
  // One budget of deliveries per remote server, single or batched.
  const limit = peerBuckets(deps);
  return [
    s2sHello(deps),
    s2sAuth(deps),
    s2sDeliver(deps, limit),
    s2sDeliverBatch(deps, limit),
    s2sUserinfo(deps),
  ];
}

/** `s2s_hello`. */
function s2sHello(deps: InboundDeps): Command {
  return defineCommand({
    name: "s2s_hello",
    auth: "none",
    params: { receiver: { type: "string", max: 253 } },
    handler: (p, ctx) => {
      if (p.receiver.toLowerCase() !== deps.self) {
        throw new ProtocolError(
          ErrorCode.S2S_AUTH_FAILED,
          `this server is ${deps.self}, not ${p.receiver}`,
        );
      }
      const challenge = toBase64(crypto.getRandomValues(new Uint8Array(32)));
      ctx.session.data.set("s2s_challenge", challenge);
      return { challenge };
    },
  });
}

/** `s2s_auth`. */
function s2sAuth(deps: InboundDeps): Command {
  return defineCommand({
    name: "s2s_auth",
    auth: "none",
    params: {
      challenge: { type: "string", max: 100 },
      nonce: { type: "string", min: 16, max: 100 },
      host: { type: "string", max: 253 },
      receiver: { type: "string", max: 253 },
      domain: { type: "string", max: 253 },
      destinations: {
        type: "array",
        items: "string",
        min: 1,
        max: 100,
        itemMax: 253,
      },
      timestamp: { type: "number" },
      signature: { type: "binary", max: 1024 },
    },
    handler: async (p, ctx) => {
      const expected = ctx.session.data.get("s2s_challenge") as
        | string
        | undefined;
      ctx.session.data.delete("s2s_challenge");
      const claim = {
        challenge: p.challenge,
        nonce: p.nonce,
        host: p.host.toLowerCase(),
        receiver: p.receiver.toLowerCase(),
        domain: p.domain.toLowerCase(),
        destinations: [
          ...new Set(
            (p.destinations as string[]).map((d) => d.toLowerCase()),
          ),
        ],
        timestamp: p.timestamp,
      };
      try {
        await verifyClaim(claim, p.signature, {
          dns: deps.dns,
          expectedChallenge: expected,
          self: deps.self,
          hosted: (domain) => hosted(deps, domain),
          policy: deps.policies && ((d) => deps.policies!.get(d)),
          report: deps.policies &&
            ((d, detail) => deps.policies!.report(d, detail)),
        });
      } catch (error) {
        ctx.log.warn("s2s_auth_refused", {
          host: claim.host,
          domain: claim.domain,
          ip: ctx.session.remoteAddr,
          reason: (error as Error).message,
        });
        throw error;
      }
      ctx.session.data.set(
        "s2s_peer",
        {
          host: claim.host,
          domain: claim.domain,
          destinations: claim.destinations,
          since: (deps.now ?? Date.now)(),
        } satisfies Peer,
      );
      ctx.log.info("s2s_authenticated", {
        host: claim.host,
        domain: claim.domain,
        ip: ctx.session.remoteAddr,
      });
      return { authenticated: true };
    },
  });
}

/**
 * A command served only on a session that authenticated as a peer: its
 * handler is given the peer (S2S_NOT_AUTHENTICATED before `s2s_auth`).
 */
export function peerCommand<S extends ParamSchema>(
  deps: InboundDeps,
  command: {
    name: string;
    params: S;
    handler: (p: Params<S>, ctx: HandlerContext, peer: Peer) => unknown;
  },
): Command {
  return defineCommand({
    name: command.name,
    auth: "none",
    params: command.params,
    handler: (p, ctx) => command.handler(p, ctx, peerOf(ctx, deps)),
  });
}

/** The parameters of one delivery: `s2s_deliver`'s, each item of `s2s_deliver_batch`'s. */
const DELIVERY_PARAMS = {
  module: { type: "string", max: 64 },
  from: { type: "string", max: 320 },
  to: { type: "array", items: "string", min: 1, max: 100, itemMax: 320 },
  id: { type: "string", min: 1, max: 128 },
  payload: { type: "object", optional: true },
} as const satisfies ParamSchema;

/** Deliveries of one `s2s_deliver_batch`. */
export const MAX_BATCH = 32;

/** Deliveries per second from each remote server, one bucket per host. */
function peerBuckets(deps: InboundDeps) {
  const buckets = new Map<string, TokenBucket>();
  const rate = deps.peerRate ?? 500;
  return (peer: Peer, n: number): void => {
    let bucket = buckets.get(peer.host);
    if (!bucket) {
      buckets.set(peer.host, bucket = new TokenBucket(rate, rate * 10));
    }
    if (!bucket.take(n)) {
      throw new ProtocolError(
        ErrorCode.RATE_LIMITED,
        `more than ${rate} deliveries per second from ${peer.host}`,
        {
          retry_after: 1,
        },
      );
    }
  };
}

/** One delivery from a peer, checked and handed to its module: the result per recipient. */
async function deliverOne(
  deps: InboundDeps,
  p: Params<typeof DELIVERY_PARAMS>,
  ctx: HandlerContext,
  peer: Peer,
): Promise<RecipientResult[]> {
  // Only this server speaks for the domains it hosts: a peer that
  // authenticated for one (its DNS lists that peer too) could
  // otherwise deliver mail that looks made here.
  if (await hosted(deps, peer.domain)) {
    throw new ProtocolError(
      ErrorCode.S2S_NOT_DELEGATED,
      `${peer.domain} is hosted on this server: no other server delivers for it`,
    );
  }
  const from = address(p.from);
  if (!from || splitAddress(from)[1] !== peer.domain) {
    throw new ProtocolError(
      ErrorCode.S2S_FROM_MISMATCH,
      `${p.from} is not an address of ${peer.domain}, the domain this server authenticated for`,
    );
  }
  const results: RecipientResult[] = [];
  const local: string[] = [];
  for (const raw of p.to as string[]) {
    const to = address(raw);
    if (!to) {
      results.push({
        address: raw,
        status: "failed",
        error: ErrorCode.INVALID_ADDRESS,
        message: "invalid address",
      });
    } else if (!peer.destinations.includes(splitAddress(to)[1])) {
      // The session was accepted for the domains it named, nothing else.
      results.push({
        address: raw,
        status: "failed",
        error: ErrorCode.S2S_WRONG_DESTINATION,
        message: "not a destination of this server session",
      });
    } else if (!(await hosted(deps, splitAddress(to)[1]))) {
      results.push({
        address: raw,
        status: "failed",
        error: ErrorCode.S2S_WRONG_DESTINATION,
        message: "not hosted here",
      });
    } else local.push(to);
  }
  if (local.length > 0) {
    try {
      const answer = await deps.deliver(p.module, {
        kind: "deliver",
        from,
        to: local,
        id: p.id,
        payload: p.payload ?? null,
        peer: peer.host,
        // The origin of what is delivered: the authenticated domain.
        peer_domain: peer.domain,
      });
      results.push(...answer.recipients);
    } catch (error) {
      const code = error instanceof ProtocolError
        ? error.code
        : ErrorCode.INTERNAL;
      const message = error instanceof ProtocolError
        ? error.message
        : "internal error";
      for (const to of local) {
        results.push({
          address: to,
          status: "failed",
          error: code,
          message,
        });
      }
    }
  }
  ctx.log.info("s2s_delivered", {
    host: peer.host,
    module: p.module,
    delivered: results.filter((r) => r.status === "delivered").length,
    failed: results.filter((r) => r.status !== "delivered").length,
  });
  return results;
}

/** `s2s_deliver`. */
function s2sDeliver(
  deps: InboundDeps,
  limit: (peer: Peer, n: number) => void,
): Command {
  return peerCommand(deps, {
    name: "s2s_deliver",
    params: DELIVERY_PARAMS,
    handler: async (p, ctx, peer) => {
      limit(peer, 1);
      return { recipients: await deliverOne(deps, p, ctx, peer) };
    },
  });
}

/**
 * `s2s_deliver_batch`: several deliveries in one request, each checked and
 * answered as `s2s_deliver` would be, all handed to their modules at once
 * (the messages module then stores them in shared commits).
 */
function s2sDeliverBatch(
  deps: InboundDeps,
  limit: (peer: Peer, n: number) => void,
): Command {
  return peerCommand(deps, {
    name: "s2s_deliver_batch",
    params: {
      deliveries: {
        type: "array",
        items: "object",
        min: 1,
        max: MAX_BATCH,
      },
    },
    handler: async (p, ctx, peer) => {
      limit(peer, p.deliveries.length);
      ctx.log.info("s2s_batch", {
        host: peer.host,
        deliveries: p.deliveries.length,
      });
      const results = await Promise.all(
        p.deliveries.map(async (item) => {
          try {
            const one = validateParams(
              DELIVERY_PARAMS,
              item as Record<string, unknown>,
            );
            return { recipients: await deliverOne(deps, one, ctx, peer) };
          } catch (error) {
            if (!(error instanceof ProtocolError)) throw error;
            return { error: error.code, message: error.message };
          }
        }),
      );
      return { results };
    },
  });
}

/** `s2s_userinfo`. */
function s2sUserinfo(deps: InboundDeps): Command {
  return peerCommand(deps, {
    name: "s2s_userinfo",
    params: { address: { type: "string", max: 320 } },
    handler: async (p, _ctx, peer) => {
      const target = address(p.address);
      if (!target) {
        throw new ProtocolError(
          ErrorCode.INVALID_ADDRESS,
          `invalid address ${p.address}`,
        );
      }
      if (!peer.destinations.includes(splitAddress(target)[1])) {
        throw new ProtocolError(
          ErrorCode.S2S_WRONG_DESTINATION,
          `${
            splitAddress(target)[1]
          } is not a destination of this server session`,
        );
      }
      const profile = await deps.profile(target);
      if (!profile) {
        throw new ProtocolError(ErrorCode.NOT_FOUND, `no user ${target}`);
      }
      return profile;
    },
  });
}
