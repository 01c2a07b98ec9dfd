/**
 * Server authentication: what a sending server signs and how the receiving
 * server checks it.
 *
 * The signed text binds the receiver's one-time challenge, the sender's host
 * name, the domain it speaks for, the destination domain and a timestamp:
 *
 * ```
 * AMTP-S2S-1\n<challenge>\n<host>\n<domain>\n<destination>\n<timestamp ms>
 * ```
 *
 * The receiver accepts only if the signature verifies with a key published at
 * the host's `amtp-dkim` record AND the domain's `amtp-servers` record lists
 * the host AND the destination is hosted here AND the timestamp is within five
 * minutes. A signature made for one receiver is useless at another: its
 * challenge and destination differ.
 *
 * @module
 */

import { ErrorCode, ProtocolError } from "../protocol/mod.ts";
import type { DnsResolver } from "./dns.ts";
import { DnsError } from "./dns.ts";
import { verifyWith } from "./keys.ts";

/** Largest clock difference accepted, in milliseconds. */
export const MAX_SKEW_MS = 5 * 60_000;

/** What a sending server claims. */
export interface Claim {
  /** The receiver's challenge (base64). */
  challenge: string;
  /** The sender's host name. */
  host: string;
  /** The domain it speaks for. */
  domain: string;
  /** The receiving domain. */
  destination: string;
  /** Epoch milliseconds. */
  timestamp: number;
}

/** The bytes a sending server signs. */
export function signedText(claim: Claim): Uint8Array {
  return new TextEncoder().encode(
    [
      "AMTP-S2S-1",
      claim.challenge,
      claim.host,
      claim.domain,
      claim.destination,
      String(claim.timestamp),
    ].join("\n"),
  );
}

/**
 * Check a claim and its signature.
 *
 * @throws {ProtocolError} S2S_AUTH_FAILED, S2S_NOT_DELEGATED or S2S_WRONG_DESTINATION
 */
export async function verifyClaim(
  claim: Claim,
  signature: Uint8Array,
  options: {
    dns: DnsResolver;
    expectedChallenge?: string;
    hosted: (domain: string) => Promise<boolean>;
    now?: number;
  },
): Promise<void> {
  const fail = (message: string) =>
    new ProtocolError(ErrorCode.S2S_AUTH_FAILED, message);
  if (
    !options.expectedChallenge || claim.challenge !== options.expectedChallenge
  ) {
    throw fail(
      "the challenge is not the one this server issued on this connection",
    );
  }
  if (Math.abs((options.now ?? Date.now()) - claim.timestamp) > MAX_SKEW_MS) {
    throw fail("the timestamp is more than five minutes off");
  }
  if (!(await options.hosted(claim.destination))) {
    throw new ProtocolError(
      ErrorCode.S2S_WRONG_DESTINATION,
      `${claim.destination} is not hosted on this server`,
    );
  }
  let keys;
  try {
    keys = await options.dns.keys(claim.host);
  } catch (error) {
    throw fail(
      `the keys of ${claim.host} cannot be looked up: ${
        (error as Error).message
      }`,
    );
  }
  if (keys.length === 0) throw fail(`${claim.host} publishes no amtp-dkim key`);
  const data = signedText(claim);
  let verified = false;
  for (const key of keys) {
    if (await verifyWith(key, data, signature)) {
      verified = true;
      break;
    }
  }
  if (!verified) {
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
  if (!servers.some((s) => s.host === claim.host.toLowerCase())) {
    throw new ProtocolError(
      ErrorCode.S2S_NOT_DELEGATED,
      `${claim.host} is not listed in the amtp-servers record of ${claim.domain}`,
    );
  }
}
