/**
 * Delivery policies, in the spirit of MTA-STS (RFC 8461): DNS alone cannot be
 * trusted to say which servers and keys speak for a domain, so a domain
 * publishes, over HTTPS on a name under its own control with a CA-verified
 * certificate, which servers may serve it and which keys sign for it, with a
 * lifetime for which other servers remember it. DNS only announces the
 * version, so a spoofer can at most hide a policy from a server that never
 * saw it (trust on first contact, as MTA-STS).
 *
 * - DNS: `_amtp-policy.<domain>` TXT `v=AMTP-POLICY1; id=<id>[; port=<port>]`
 * - HTTPS: `https://amtp-policy.<domain>[:port]/.well-known/amtp-policy.json`
 *
 * ```json
 * { "version": "AMTP-POLICY1", "mode": "enforce",
 *   "servers": ["amtp1.example.org", "amtp2.example.org:4433"],
 *   "keys": ["ed25519:<base64 raw key>", "rsa:<base64 SPKI>"],
 *   "max_age": 604800 }
 * ```
 *
 * A server with a cached policy in `enforce` mode delivers only to servers it
 * lists, and accepts a domain's mail only from a server it lists, signed by a
 * key it lists (and that DNS still publishes). `testing` only reports.
 *
 * @module
 */

import { type KvCache, policyCache } from "../../kv/caches.ts";
import type { Logger } from "../log/mod.ts";
import {
  type DkimKey,
  DnsError,
  type DnsResolver,
  parseDkim,
  parseServers,
  type ServerAddress,
} from "./dns.ts";
import { httpsGet } from "./https.ts";
import { keyText } from "./keys.ts";

/** The policy format's version string. */
export const POLICY_VERSION = "AMTP-POLICY1";
/** Where a domain's policy is served, below `https://amtp-policy.<domain>`. */
export const POLICY_PATH = "/.well-known/amtp-policy.json";
/** Largest policy document accepted. */
const MAX_POLICY_BYTES = 64 * 1024;
/** Longest lifetime honoured (one year, as MTA-STS). */
const MAX_AGE_LIMIT = 31_557_600;
/** Milliseconds a failed fetch is not tried again for the same domain. */
const RETRY_AFTER_FAILURE_MS = 60_000;

/** A domain's delivery policy. */
export interface DeliveryPolicy {
  /** `enforce`: refuse what is outside; `testing`: report only. */
  mode: "enforce" | "testing";
  /** The servers that may serve the domain. */
  servers: ServerAddress[];
  /** Keys (`ed25519:<b64>`, `rsa:<b64>`) that may sign for its servers. */
  keys: string[];
  /** Seconds it may be cached. */
  max_age: number;
}

/** A policy as remembered: the id DNS announced, when it was fetched and until when it holds. */
export interface CachedPolicy {
  /** The policy. */
  policy: DeliveryPolicy;
  /** The id of the DNS announcement it was fetched for. */
  id: string;
  /** Epoch milliseconds of the fetch. */
  fetched: number;
  /** Epoch milliseconds after which it no longer holds. */
  expires: number;
}

/** The DNS announcement of a policy. */
export interface PolicyRecord {
  /** Policy id (changes with every new policy). */
  id: string;
  /** HTTPS port of the policy host (443 unless given). */
  port: number;
}

/** A policy document or record that cannot be used. */
export class PolicyError extends Error {
  /** Create the error. */
  constructor(message: string) {
    super(message);
    this.name = "PolicyError";
  }
}

/** Parse a TXT value `v=AMTP-POLICY1; id=...; port=...`; undefined when it is not one. */
export function parsePolicyRecord(value: string): PolicyRecord | undefined {
  const tags = new Map<string, string>();
  for (const part of value.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0) {
      tags.set(
        part.slice(0, eq).trim().toLowerCase(),
        part.slice(eq + 1).trim(),
      );
    }
  }
  if (tags.get("v") !== POLICY_VERSION) return undefined;
  const id = tags.get("id") ?? "";
  if (!/^[A-Za-z0-9]{1,32}$/.test(id)) return undefined;
  const port = Number(tags.get("port") ?? "443");
  if (!Number.isInteger(port) || port < 1 || port > 65535) return undefined;
  return { id, port };
}

/**
 * Parse and check a policy document.
 *
 * @throws {PolicyError} when it is not a usable policy
 */
export function parsePolicy(text: string): DeliveryPolicy {
  let raw: Record<string, unknown>;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new PolicyError("the policy is not JSON");
  }
  if (!raw || typeof raw !== "object" || raw.version !== POLICY_VERSION) {
    throw new PolicyError(`the policy's version is not ${POLICY_VERSION}`);
  }
  if (raw.mode !== "enforce" && raw.mode !== "testing") {
    throw new PolicyError('the policy\'s mode is not "enforce" or "testing"');
  }
  const list = (field: string) => {
    const value = raw[field];
    if (
      !Array.isArray(value) || value.length === 0 || value.length > 100 ||
      value.some((v) => typeof v !== "string")
    ) {
      throw new PolicyError(`the policy's "${field}" is not a list of strings`);
    }
    return value as string[];
  };
  const servers = parseServers(list("servers").join(","));
  if (servers.length === 0) {
    throw new PolicyError("the policy lists no usable server");
  }
  const keys: string[] = [];
  for (const entry of list("keys")) {
    const colon = entry.indexOf(":");
    const key = colon > 0
      ? parseDkim(`k=${entry.slice(0, colon)};p=${entry.slice(colon + 1)}`)
      : undefined;
    if (!key) {
      throw new PolicyError(`the policy's key "${entry}" is not usable`);
    }
    keys.push(keyText(key));
  }
  const maxAge = raw.max_age;
  if (
    typeof maxAge !== "number" || !Number.isInteger(maxAge) || maxAge < 0
  ) {
    throw new PolicyError("the policy's max_age is not a whole number");
  }
  return {
    mode: raw.mode,
    servers,
    keys,
    max_age: Math.min(maxAge, MAX_AGE_LIMIT),
  };
}

/** Whether a policy lists a server (host and port). */
export function allowsServer(
  policy: DeliveryPolicy,
  server: ServerAddress,
): boolean {
  return policy.servers.some((s) =>
    s.host === server.host && s.port === server.port
  );
}

/** Whether a policy lists a server by host name (a sending server names no port). */
export function allowsHost(policy: DeliveryPolicy, host: string): boolean {
  return policy.servers.some((s) => s.host === host);
}

/** Whether a policy lists a key. */
export function allowsKey(policy: DeliveryPolicy, key: DkimKey): boolean {
  return policy.keys.includes(keyText(key));
}

/** The policy document a server publishes, as served. */
export function policyDocument(
  policy: Omit<DeliveryPolicy, "servers"> & { servers: string[] },
): string {
  return JSON.stringify(
    {
      version: POLICY_VERSION,
      mode: policy.mode,
      servers: policy.servers,
      keys: policy.keys,
      max_age: policy.max_age,
    },
    null,
    2,
  ) + "\n";
}

/** The id to announce for a document: the first 16 hex digits of its SHA-256. */
export async function policyId(document: string): Promise<string> {
  const digest = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new TextEncoder().encode(document)),
  );
  return Array.from(
    digest.subarray(0, 8),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** Violations of one domain's policy seen by this server (TLS-RPT-like). */
export interface PolicyReport {
  /** The domain whose policy was violated. */
  domain: string;
  /** How many times. */
  count: number;
  /** When last. */
  last: Date;
  /** What last. */
  detail: string;
}

/** Options of {@link PolicyStore}. */
export interface PolicyStoreOptions {
  /** KV for the cache (shared by the server's processes). */
  kv: Deno.Kv;
  /** DNS. */
  dns: DnsResolver;
  /** Extra CA certificates (PEM). */
  caCerts: string[];
  /** Milliseconds allowed for one fetch. */
  timeoutMs: number;
  /** Logger. */
  log: Logger;
  /** Clock (tests). */
  now?: () => number;
}

/** Finds, fetches, caches and reports other domains' delivery policies. */
export class PolicyStore {
  readonly #options: PolicyStoreOptions;
  readonly #now: () => number;
  readonly #failed = new Map<string, number>();
  readonly #inflight = new Map<string, Promise<CachedPolicy | undefined>>();
  readonly #reports = new Map<string, PolicyReport>();
  readonly #cache: KvCache<CachedPolicy>;

  /** Create the store. */
  constructor(options: PolicyStoreOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#cache = policyCache<CachedPolicy>(options.kv);
  }

  /** The DNS announcement of a domain's policy; undefined when there is none (or DNS fails). */
  async record(domain: string): Promise<PolicyRecord | undefined> {
    let records: string[];
    try {
      records = await this.#options.dns.txt(`_amtp-policy.${domain}`);
    } catch (error) {
      if (error instanceof DnsError) return undefined;
      throw error;
    }
    for (const value of records) {
      const record = parsePolicyRecord(value);
      if (record) return record;
    }
    return undefined;
  }

  /**
   * Fetch a domain's policy from `https://amtp-policy.<domain>`.
   *
   * @throws {PolicyError} when it cannot be fetched or used
   */
  async fetch(domain: string, port = 443): Promise<DeliveryPolicy> {
    const host = `amtp-policy.${domain}`;
    let addresses: string[];
    try {
      addresses = await this.#options.dns.addresses(host);
    } catch (error) {
      throw new PolicyError(`${host}: ${(error as Error).message}`);
    }
    let response;
    try {
      response = await httpsGet(host, POLICY_PATH, {
        addresses,
        port,
        caCerts: this.#options.caCerts,
        timeoutMs: this.#options.timeoutMs,
        maxBytes: MAX_POLICY_BYTES,
      });
    } catch (error) {
      throw new PolicyError((error as Error).message);
    }
    if (response.status !== 200) {
      throw new PolicyError(
        `https://${host}${POLICY_PATH} answered ${response.status}`,
      );
    }
    return parsePolicy(new TextDecoder().decode(response.body));
  }

  /**
   * The policy in force for a domain: the cached one while it holds (fetched
   * again when DNS announces another id), else a fresh one when DNS
   * announces one; undefined when the domain has none.
   */
  get(domain: string): Promise<CachedPolicy | undefined> {
    const running = this.#inflight.get(domain);
    if (running) return running;
    const work = this.#get(domain).finally(() => this.#inflight.delete(domain));
    this.#inflight.set(domain, work);
    return work;
  }

  async #get(domain: string): Promise<CachedPolicy | undefined> {
    const now = this.#now();
    const stored = await this.#cache.get(domain);
    const cached = stored && stored.expires > now ? stored : undefined;
    const record = await this.record(domain);
    if (!record || record.id === cached?.id) return cached;
    if ((this.#failed.get(domain) ?? 0) > now) return cached;
    try {
      const policy = await this.fetch(domain, record.port);
      const fresh: CachedPolicy = {
        policy,
        id: record.id,
        fetched: now,
        expires: now + policy.max_age * 1000,
      };
      await this.#cache.set(domain, fresh);
      this.#failed.delete(domain);
      this.#options.log.info("policy_fetched", {
        domain,
        id: record.id,
        mode: policy.mode,
        servers: policy.servers.length,
      });
      return fresh;
    } catch (error) {
      if (this.#failed.size >= 10_000) {
        for (const [d, until] of this.#failed) {
          if (until <= now) this.#failed.delete(d);
        }
      }
      this.#failed.set(domain, now + RETRY_AFTER_FAILURE_MS);
      this.#options.log.warn("policy_fetch_failed", {
        domain,
        id: record.id,
        error: (error as Error).message,
        cached: cached !== undefined,
      });
      return cached;
    }
  }

  /** Count a violation of a domain's policy (and log it). */
  report(domain: string, detail: string): void {
    const entry = this.#reports.get(domain) ??
      { domain, count: 0, last: new Date(0), detail };
    entry.count++;
    entry.last = new Date(this.#now());
    entry.detail = detail;
    this.#reports.set(domain, entry);
    this.#options.log.warn("policy_violation", { domain, detail });
  }

  /** Violations seen since start, by domain. */
  reports(): PolicyReport[] {
    return [...this.#reports.values()].map((r) => ({ ...r }));
  }
}

/** The `amtp-dkim` value of a key, as a policy lists it. */
export function policyKeyOf(record: string): string | undefined {
  const key = parseDkim(record);
  return key ? keyText(key) : undefined;
}
