/**
 * Server authentication: what a sending server signs and how the receiving
 * server checks it.
 *
 * The signed text binds both servers and both sides' fresh randomness:
 *
 * ```
 * AMTP-S2S-2
 * <receiver's challenge>
 * <sender's nonce>
 * <sender host>
 * <receiver host>
 * <sender domain>
 * <destination domains, sorted, comma-separated>
 * <timestamp ms>
 * ```
 *
 * The receiver host is the name the sender connected to and verified the TLS
 * certificate of. A receiver accepts only a text naming itself, so a server
 * that relays another server's challenge gets a signature naming the relay,
 * which the real receiver refuses (Deno exposes no TLS exporter to bind the
 * channel itself; a relay would need a certificate for the receiver's name).
 *
 * The receiver also needs: the challenge it issued on this connection, a
 * timestamp within five minutes, every destination hosted here, the sender
 * domain not hosted here, a signature by a key the sender host publishes
 * (`amtp-dkim`; RSA at least 2048 bits), the sender host listed in the
 * domain's `amtp-servers`, and, when the domain publishes a delivery policy,
 * host and key inside it.
 *
 * @module
 */

import { ErrorCode, ProtocolError } from "../protocol/mod.ts";
import type { DkimKey, DnsResolver } from "./dns.ts";
import { DnsError } from "./dns.ts";
import { keyWeakness, verifyWith } from "./keys.ts";
import type { CachedPolicy } from "./policy.ts";
import { allowsHost, allowsKey } from "./policy.ts";

/** Largest clock difference accepted, in milliseconds. */
export const MAX_SKEW_MS = 5 * 60_000;

/** What a sending server claims. */
export interface Claim {
  /** The receiver's challenge (base64). */
  challenge: string;
  /** The sender's own fresh nonce (base64). */
  nonce: string;
  /** The sender's host name. */
  host: string;
  /** The receiver's host name, as the sender connected to it. */
  receiver: string;
  /** The domain it speaks for. */
  domain: string;
  /** The receiving domains this session may deliver to. */
  destinations: string[];
  /** Epoch milliseconds. */
  timestamp: number;
}

/** The bytes a sending server signs. */
export function signedText(claim: Claim): Uint8Array {
  return new TextEncoder().encode(
    [
      "AMTP-S2S-2",
      claim.challenge,
      claim.nonce,
      claim.host,
      claim.receiver,
      claim.domain,
      [...claim.destinations].sort().join(","),
      String(claim.timestamp),
    ].join("\n"),
  );
}

/** How the receiver checks a claim. */
export interface VerifyOptions {
  /** DNS. */
  dns: DnsResolver;
  /** The challenge issued on this connection, if any. */
  expectedChallenge?: string;
  /** This server's host name. */
  self: string;
  /** Whether a domain is hosted here. */
  hosted: (domain: string) => Promise<boolean>;
  /** The delivery policy a domain publishes, if any. */
  policy?: (domain: string) => Promise<CachedPolicy | undefined>;
  /** Told of a server or key outside a domain's policy. */
  report?: (domain: string, detail: string) => void;
  /** Clock (tests). */
  now?: number;
}

function fail(message: string): ProtocolError {
  return new ProtocolError(ErrorCode.S2S_AUTH_FAILED, message);
}

/**
 * Check a claim and its signature.
 *
 * @throws {ProtocolError} S2S_AUTH_FAILED, S2S_NOT_DELEGATED,
 *   S2S_WRONG_DESTINATION or POLICY_VIOLATION
 */
export async function verifyClaim(
  claim: Claim,
  signature: Uint8Array,
  options: VerifyOptions,
): Promise<void> {
  if (
    !options.expectedChallenge || claim.challenge !== options.expectedChallenge
  ) {
    throw fail(
      "the challenge is not the one this server issued on this connection",
    );
  }
  if (claim.receiver !== options.self) {
    throw fail(
      `the signature is for ${claim.receiver}, not for this server (${options.self})`,
    );
  }
  if (Math.abs((options.now ?? Date.now()) - claim.timestamp) > MAX_SKEW_MS) {
    throw fail("the timestamp is more than five minutes off");
  }
  if (claim.destinations.length === 0) {
    throw new ProtocolError(
      ErrorCode.S2S_WRONG_DESTINATION,
      "the claim names no destination domain",
    );
  }
  for (const destination of claim.destinations) {
    if (!(await options.hosted(destination))) {
      throw new ProtocolError(
        ErrorCode.S2S_WRONG_DESTINATION,
        `${destination} is not hosted on this server`,
      );
    }
  }
  if (await options.hosted(claim.domain)) {
    throw new ProtocolError(
      ErrorCode.S2S_NOT_DELEGATED,
      `${claim.domain} is hosted on this server: no other server speaks for it`,
    );
  }
  let published: DkimKey[];
  try {
    published = await options.dns.keys(claim.host);
  } catch (error) {
    throw fail(
      `the keys of ${claim.host} cannot be looked up: ${
        (error as Error).message
      }`,
    );
  }
  const usable: DkimKey[] = [];
  const weak: string[] = [];
  for (const key of published) {
    const weakness = await keyWeakness(key);
    if (weakness) weak.push(weakness);
    else usable.push(key);
  }
  if (usable.length === 0) {
    throw fail(
      weak.length
        ? `${claim.host} publishes no usable amtp-dkim key (${weak.join("; ")})`
        : `${claim.host} publishes no amtp-dkim key`,
    );
  }
  const data = signedText(claim);
  let signer: DkimKey | undefined;
  for (const key of usable) {
    if (await verifyWith(key, data, signature)) {
      signer = key;
      break;
    }
  }
  if (!signer) {
    throw fail(
      `the signature does not verify with the keys ${claim.host} publishes`,
    );
  }
  let servers;
  try {
    servers = await options.dns.servers(claim.domain);
  } catch (error) {
    const message = error instanceof DnsError ? error.message : String(error);
    throw new ProtocolError(
      ErrorCode.S2S_NOT_DELEGATED,
      `${claim.domain}: ${message}`,
    );
  }
  if (!servers.some((s) => s.host === claim.host)) {
    throw new ProtocolError(
      ErrorCode.S2S_NOT_DELEGATED,
      `${claim.host} is not listed in the amtp-servers record of ${claim.domain}`,
    );
  }
  // Only a domain that names this host costs a policy lookup (a sender cannot
  // make this server fetch the policies of arbitrary domains).
  const cached = await options.policy?.(claim.domain);
  if (cached) {
    const outside = !allowsHost(cached.policy, claim.host)
      ? `${claim.host} is not a server of ${claim.domain}'s delivery policy`
      : !allowsKey(cached.policy, signer)
      ? `the key ${claim.host} signed with is not in ${claim.domain}'s delivery policy`
      : undefined;
    if (outside) {
      options.report?.(claim.domain, outside);
      if (cached.policy.mode === "enforce") {
        throw new ProtocolError(ErrorCode.POLICY_VIOLATION, outside);
      }
    }
  }
}
