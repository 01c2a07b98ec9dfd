/**
 * Federation: servers find each other through DNS, prove who they are with a
 * signed challenge, and deliver module payloads with a durable retry queue.
 *
 * This module wires the parts: the server key, DNS, the pool of peer
 * sessions, the outbound queue, the inbound commands (served on peer
 * connections only), remote profiles, and the admin commands for the queue
 * and the DNS check.
 *
 * @module
 */

import {
  type AccountStore,
  type CachedProfile,
  type KvCache,
  KvGroupCommit,
  type OutboundItem,
  OutboundStore,
  profileCache,
} from "../../kv/mod.ts";
import type { Config } from "../config/mod.ts";
import { splitAddress } from "../../shared/identity.ts";
import type { Logger } from "../log/mod.ts";
import {
  type Answered,
  type Command,
  defineCommand,
  Dispatcher,
  ErrorCode,
  ProtocolError,
} from "../protocol/mod.ts";
import type {
  ComposeRequest,
  DeliverToModule,
  TransportRequest,
  TransportResult,
} from "./delivery.ts";
import { DkimKeys } from "./dkim.ts";
import { EmailRoute } from "./email_route.ts";
import { PeerPool } from "./peers.ts";
import { DnsError, DnsResolver } from "./dns.ts";
import { inboundCommands, type InboundDeps } from "./inbound.ts";
import { blobCommands, moduleBlobReader, pushBlobs } from "./blobs.ts";
import { keyText, ServerKeys } from "./keys.ts";
import {
  parsePolicyRecord,
  POLICY_PATH,
  policyDocument,
  policyId,
  policyKeyOf,
  PolicyStore,
} from "./policy.ts";
import { enqueueOutbound, type OutboundDelivery } from "./outbox.ts";
import { type DeliveryOutcome, OutboundQueue } from "./queue.ts";

/** Seconds a remote profile is cached. */
export const PROFILE_CACHE_SECONDS = 300;

/** What federation needs from the rest of the server. */
export interface FederationDeps {
  /** Configuration. */
  config: Config;
  /** KV. */
  kv: Deno.Kv;
  /** Group commit of `kv` shared with the rest of the core (one is made when absent). */
  writes?: KvGroupCommit;
  /** Accounts. */
  accounts: AccountStore;
  /** Logger. */
  log: Logger;
  /** Hand a delivery or bounce to a module's inbound handler. */
  inbound: DeliverToModule;
  /** A local user's public profile, or null. */
  profile: (address: string) => Promise<Record<string, unknown> | null>;
  /** The port this server listens on (for the records to publish). */
  port: () => number;
  /** Told of deliveries: remote ones after each attempt, inbound ones as taken (metrics). */
  observe?: (
    route: "remote" | "inbound",
    outcome: DeliveryOutcome,
    recipients: number,
  ) => void;
  /** Told of every answered server-to-server request (metrics). */
  observeCommand?: (answered: Answered) => void;
  /** Have a module compose one of its payloads as an Internet message (the email route). */
  compose?: (
    module: string,
    request: ComposeRequest,
  ) => Promise<{ raw: Uint8Array }>;
  /** Hand a message to the gateway module that carries `smtp`. */
  transport?: (request: TransportRequest) => Promise<TransportResult>;
  /** Whether a gateway module carries `smtp` now. */
  carriesEmail?: () => boolean;
}

/** How a remote address is reached. */
export type RemoteRoute = "amtp" | "email" | "none" | "unknown";

/** Running federation. */
export class Federation {
  readonly keys: ServerKeys;
  readonly dns: DnsResolver;
  readonly pool: PeerPool;
  readonly queue: OutboundQueue;
  /** Other domains' delivery policies (fetched, cached, reported). */
  readonly policies: PolicyStore;
  /** The hosted domains' DKIM keys (email). */
  readonly dkim: DkimKeys;
  /** The email route of the queue. */
  readonly email: EmailRoute;
  /** Dispatcher of peer (server-to-server) sessions. */
  readonly dispatcher: Dispatcher;
  readonly #deps: FederationDeps;
  /** The outbound queue's records. */
  readonly #outbound: OutboundStore;
  /** Remote users' profiles, kept a few minutes. */
  readonly #profiles: KvCache<CachedProfile>;

  private constructor(
    deps: FederationDeps,
    keys: ServerKeys,
    caCerts: string[],
  ) {
    this.#deps = deps;
    const { config, log } = deps;
    this.keys = keys;
    this.dns = new DnsResolver({
      nameServer: config.dns,
      timeoutMs: 5000,
      cacheSeconds: config.dnsCache,
    });
    this.policies = new PolicyStore({
      kv: deps.kv,
      dns: this.dns,
      caCerts,
      timeoutMs: config.federationTimeout * 1000,
      log: log.child({ part: "policy" }),
    });
    this.pool = new PeerPool({
      policies: this.policies,
      dns: this.dns,
      caCerts,
      connectTimeoutMs: config.federationTimeout * 1000,
      requestTimeoutMs: config.federationTimeout * 1000,
      maxFrame: config.maxFrame,
      keys,
      hostname: config.hostname,
    });
    this.#outbound = new OutboundStore(
      deps.kv,
      deps.writes ?? new KvGroupCommit(deps.kv),
    );
    this.#profiles = profileCache(deps.kv);
    this.dkim = new DkimKeys(deps.kv);
    this.email = new EmailRoute({
      dns: this.dns,
      dkim: this.dkim,
      compose: deps.compose ?? (() => {
        throw new ProtocolError(ErrorCode.MODULE_UNAVAILABLE, "no composer");
      }),
      transport: deps.transport ?? (() => {
        throw new ProtocolError(ErrorCode.MODULE_UNAVAILABLE, "no gateway");
      }),
      available: deps.carriesEmail ?? (() => false),
    });
    this.queue = new OutboundQueue({
      store: this.#outbound,
      pool: this.pool,
      email: this.email,
      log: log.child({ part: "federation" }),
      lifetimeMs: config.federationLifetime * 1000,
      leaseMs: config.queueLease * 1000,
      batch: config.federationBatch,
      // An instance's name: its host and port (two instances on one machine
      // listen on two ports); with a port chosen at start, none that lasts.
      holder: config.port ? `${config.hostname}:${config.port}` : undefined,
      retryBaseMs: config.federationRetry * 1000,
      retryMaxMs: config.federationRetryMax * 1000,
      observe: (outcome, recipients) =>
        deps.observe?.("remote", outcome, recipients),
      // Attachments go first, in the same session (blobs.ts).
      beforeDeliver: (session, item) =>
        pushBlobs(session, item, moduleBlobReader(deps.inbound)),
      bounce: async (item, failures) => {
        await deps.inbound(item.module, {
          kind: "bounce",
          from: item.from,
          to: failures.map((f) => f.address),
          id: item.delivery_id,
          payload: item.payload,
          failures,
        });
      },
    });
    this.dispatcher = new Dispatcher({
      log: log.child({ part: "s2s" }),
      moduleEnvelope: false,
      timeoutMs: 30_000,
      spanName: "amtp.s2s",
      observe: deps.observeCommand,
    });
    const inboundDeps: InboundDeps = {
      dns: this.dns,
      self: config.hostname,
      policies: this.policies,
      accounts: deps.accounts,
      deliver: async (module, delivery) => {
        const answer = await deps.inbound(module, delivery);
        const delivered =
          answer.recipients.filter((r) => r.status === "delivered").length;
        deps.observe?.("inbound", "delivered", delivered);
        deps.observe?.(
          "inbound",
          "bounced",
          answer.recipients.length - delivered,
        );
        return answer;
      },
      profile: deps.profile,
    };
    this.dispatcher.register(
      ...inboundCommands(inboundDeps),
      ...blobCommands(inboundDeps),
    );
  }

  /** Load the server key and read the extra CAs; `queue.start()` starts deliveries. */
  static async open(deps: FederationDeps): Promise<Federation> {
    const keys = await ServerKeys.open(
      deps.config.dataDir,
      deps.config.serverKeyAlgorithm,
    );
    const caCerts: string[] = [];
    if (deps.config.caFile) {
      const text = await Deno.readTextFile(deps.config.caFile);
      caCerts.push(
        ...(text.match(
          /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g,
        ) ?? []),
      );
    }
    return new Federation(deps, keys, caCerts);
  }

  /** Items waiting in the outbound queue and when the oldest was queued. */
  queueStats(): Promise<{ items: number; oldest?: number }> {
    return this.#outbound.stats();
  }

  /** Queue a payload for remote recipients and wake the queue. */
  async enqueue(delivery: OutboundDelivery): Promise<string[]> {
    const ids = await enqueueOutbound(this.#outbound, delivery);
    this.queue.kick();
    return ids;
  }

  /**
   * How each address would be reached from here: `amtp` (its domain
   * publishes `amtp-servers`), `email` (it receives email and a gateway
   * carries it), `none`, or `unknown` (DNS failed).
   */
  async routes(addresses: string[]): Promise<RemoteRoute[]> {
    const byDomain = new Map<string, Promise<RemoteRoute>>();
    const routeOf = async (domain: string): Promise<RemoteRoute> => {
      try {
        await this.dns.servers(domain);
        return "amtp";
      } catch (error) {
        if (!(error instanceof DnsError && error.code === "no_record")) {
          return "unknown";
        }
      }
      if (!this.email.available) return "none";
      try {
        await this.dns.mailHosts(domain);
        return "email";
      } catch (error) {
        return error instanceof DnsError && error.code === "no_record"
          ? "none"
          : "unknown";
      }
    };
    return await Promise.all(addresses.map((address) => {
      const domain = address.slice(address.lastIndexOf("@") + 1)
        .toLowerCase();
      let route = byDomain.get(domain);
      if (!route) byDomain.set(domain, route = routeOf(domain));
      return route;
    }));
  }

  /**
   * A remote user's public profile, through their server (cached).
   *
   * @throws {ProtocolError} NOT_FOUND, NO_AMTP_RECORD or REMOTE_UNREACHABLE
   */
  async remoteProfile(
    address: string,
    asDomain: string,
    fresh = false,
  ): Promise<Record<string, unknown>> {
    const cached = await this.#profiles.get(address);
    if (
      !fresh && cached &&
      Date.now() - cached.fetched < PROFILE_CACHE_SECONDS * 1000
    ) {
      return cached.profile;
    }
    const session = await this.pool.session(asDomain, splitAddress(address)[1]);
    const profile = await session.call<Record<string, unknown>>(
      "s2s_userinfo",
      { address },
    );
    await this.#profiles.set(
      address,
      { profile, fetched: Date.now() },
      PROFILE_CACHE_SECONDS * 1000,
    );
    return profile;
  }

  /** The policy announcement and document of a hosted domain, checked against DNS and HTTPS. */
  async #checkPolicy(domain: string): Promise<Record<string, unknown>[]> {
    const policy = await this.policy();
    if (!policy) return [];
    const port = this.#deps.port();
    const name = `_amtp-policy.${domain}`;
    const value = `v=AMTP-POLICY1; id=${policy.id}${
      port === 443 ? "" : `; port=${port}`
    }`;
    let found: string[] = [];
    let status = "missing";
    let message = `no delivery policy announced at ${name}`;
    try {
      found = (await this.dns.txt(name)).filter((r) =>
        r.startsWith("v=AMTP-POLICY1")
      );
    } catch (error) {
      if (!(error instanceof DnsError && error.code === "no_record")) {
        message = (error as Error).message;
      }
    }
    const record = found.map(parsePolicyRecord).find((r) => r);
    if (record) {
      status = record.id === policy.id && record.port === port ? "ok" : "wrong";
      message = status === "ok"
        ? ""
        : record.id !== policy.id
        ? "the announced id is not the current policy's: publish the new id (the policy changed)"
        : `the announced port is not ${port}`;
    }
    const url = `https://amtp-policy.${domain}${
      port === 443 ? "" : `:${port}`
    }${POLICY_PATH}`;
    let served = "missing";
    let servedMessage = "";
    try {
      const fetched = await this.policies.fetch(domain, port);
      const mine = JSON.parse(policy.document);
      const same = fetched.mode === mine.mode &&
        fetched.max_age === mine.max_age &&
        JSON.stringify(fetched.keys) === JSON.stringify(mine.keys) &&
        fetched.servers.map((s) => `${s.host}:${s.port}`).join() ===
          mine.servers.map((s: string) => {
            const [host, p] = s.split(":");
            return `${host}:${p ?? 443}`;
          }).join();
      served = same ? "ok" : "wrong";
      if (!same) {
        servedMessage = "the policy served there differs from this server's";
      }
    } catch (error) {
      servedMessage = `${
        (error as Error).message
      } (the name needs an address and this server's certificate must cover it)`;
    }
    return [
      { name, type: "TXT", value, status, found, message },
      {
        name: url,
        type: "HTTPS",
        value: "this server's delivery policy",
        status: served,
        found: [],
        message: servedMessage,
      },
    ];
  }

  /**
   * What email needs for a hosted domain: MX naming this server, SPF, the
   * DKIM keys' records, DMARC; each checked against the live DNS.
   */
  async #checkEmail(domain: string): Promise<Record<string, unknown>[]> {
    const { hostname } = this.#deps.config;
    const rows: Record<string, unknown>[] = [];
    const failed = (error: unknown) =>
      !(error instanceof DnsError && error.code === "no_record");
    const txt = async (name: string) => {
      try {
        return { found: await this.dns.txt(name), error: "" };
      } catch (error) {
        return {
          found: [] as string[],
          error: failed(error) ? (error as Error).message : "",
        };
      }
    };
    // MX
    let mx: string[] = [];
    let mxError = "";
    try {
      mx = await this.dns.mx(domain);
    } catch (error) {
      if (failed(error)) mxError = (error as Error).message;
    }
    rows.push({
      name: domain,
      type: "MX",
      value: `10 ${hostname}.`,
      status: mx.includes(hostname)
        ? "ok"
        : mxError
        ? "failed"
        : mx.length
        ? "wrong"
        : "missing",
      found: mx,
      message: mx.includes(hostname) ? "" : mxError ||
        (mx.length
          ? `the MX records do not name ${hostname}: mail for ${domain} goes elsewhere`
          : `no MX record at ${domain}: other servers cannot send it email`),
    });
    // SPF (RFC 7208): one record that lets this server send.
    const spf = await txt(domain);
    const spfs = spf.found.filter((r) => /^v=spf1(\s|$)/i.test(r));
    const open = spfs.some((r) => /[+?]all\s*$/i.test(r));
    rows.push({
      name: domain,
      type: "TXT",
      value: "v=spf1 mx -all",
      status: spf.error
        ? "failed"
        : spfs.length === 0
        ? "missing"
        : spfs.length > 1 || open
        ? "wrong"
        : "ok",
      found: spfs,
      message: spf.error ||
        (spfs.length === 0
          ? `no SPF record at ${domain}: receivers cannot tell this server may send for it (add your relay's include: when you use one)`
          : spfs.length > 1
          ? "more than one SPF record: receivers treat that as an error (RFC 7208 section 4.5)"
          : open
          ? "the SPF record ends in +all or ?all: it lets anyone send"
          : ""),
    });
    // DKIM: every key's record, exactly.
    const norm = (r: string) => r.replace(/\s+/g, "").toLowerCase();
    for (const record of await this.dkim.records(domain)) {
      const got = await txt(record.name);
      const dkims = got.found.filter((r) => /v=DKIM1/i.test(r));
      const present = dkims.some((r) => norm(r) === norm(record.value));
      rows.push({
        name: record.name,
        type: "TXT",
        value: record.value,
        status: present
          ? "ok"
          : got.error
          ? "failed"
          : dkims.length
          ? "wrong"
          : "missing",
        found: dkims,
        message: present ? "" : got.error ||
          (dkims.length
            ? `the published DKIM key differs from this server's ${record.state} key`
            : `no DKIM key at ${record.name}${
              record.state === "pending"
                ? " (a rotation: publish it, then activate)"
                : ": receivers cannot verify mail from this domain"
            }`),
      });
    }
    // DMARC (RFC 7489)
    const dmarc = await txt(`_dmarc.${domain}`);
    const policies = dmarc.found.filter((r) => /^v=DMARC1/i.test(r));
    const policy = policies[0]?.match(/;\s*p=([a-z]+)/i)?.[1];
    rows.push({
      name: `_dmarc.${domain}`,
      type: "TXT",
      value: `v=DMARC1; p=quarantine; rua=mailto:postmaster@${domain}`,
      status: dmarc.error
        ? "failed"
        : policies.length === 0
        ? "missing"
        : policies.length > 1 || !policy
        ? "wrong"
        : "ok",
      found: policies,
      message: dmarc.error ||
        (policies.length === 0
          ? `no DMARC record: receivers do not know what to do with mail forged as ${domain}`
          : policies.length > 1
          ? "more than one DMARC record: receivers ignore them all"
          : !policy
          ? "the DMARC record has no p= policy"
          : ""),
    });
    return rows;
  }

  /** The records to publish for `domains`, each checked against the live DNS. */
  async checkDns(domains: string[]): Promise<Record<string, unknown>[]> {
    const { hostname } = this.#deps.config;
    const port = this.#deps.port();
    const server = port === 443 ? hostname : `${hostname}:${port}`;
    const rows: Record<string, unknown>[] = [];
    this.dns.clear();
    const unusable = unroutableName(hostname);
    if (unusable) {
      rows.push({
        name: hostname,
        type: "NAME",
        value: "a public DNS name of this server (AMTP_HOSTNAME)",
        status: "wrong",
        found: [hostname],
        message:
          `${hostname} ${unusable}: other servers cannot reach this server by it, so it cannot federate; set AMTP_HOSTNAME to a public name (with AMTP_CERT and AMTP_KEY)`,
      });
    }
    for (const domain of domains) {
      const expected = `amtp-servers=${server}`;
      let status = "ok";
      let message = "";
      let found: string[] = [];
      try {
        found = (await this.dns.txt(domain)).filter((r) =>
          r.startsWith("amtp-servers=")
        );
        const servers = found.length ? await this.dns.servers(domain) : [];
        if (found.length === 0) {
          status = "missing";
          message = `no amtp-servers record at ${domain}`;
        } else if (
          !servers.some((s) => s.host === hostname && s.port === port)
        ) {
          status = "wrong";
          message = `the record does not list ${server}`;
        }
      } catch (error) {
        const none = error instanceof DnsError && error.code === "no_record";
        status = none ? "missing" : "failed";
        message = none
          ? `no amtp-servers record at ${domain}`
          : String((error as Error).message);
      }
      rows.push({
        name: domain,
        type: "TXT",
        value: expected,
        status,
        found,
        message,
      });
      rows.push(...await this.#checkPolicy(domain));
      if (this.email.available) rows.push(...await this.#checkEmail(domain));
    }
    const keyRecords = this.keys.records().map((r) => `amtp-dkim=${r}`);
    let published: string[] = [];
    let lookupError = "";
    try {
      published = (await this.dns.txt(hostname)).filter((r) =>
        r.startsWith("amtp-dkim=")
      );
    } catch (error) {
      lookupError = error instanceof DnsError ? error.message : String(error);
      if (error instanceof DnsError && error.code === "no_record") {
        lookupError = "";
      }
    }
    const norm = (r: string) => r.replace(/\s+/g, "");
    keyRecords.forEach((value, i) => {
      const present = published.some((p) => norm(p) === norm(value));
      rows.push({
        name: hostname,
        type: "TXT",
        value,
        status: present
          ? "ok"
          : published.length
          ? "wrong"
          : lookupError
          ? "failed"
          : "missing",
        found: published,
        message: present
          ? ""
          : published.length
          ? `the published amtp-dkim record${
            published.length > 1 ? "s differ" : " differs"
          } from this server's ${i === 0 ? "active" : "pending"} key`
          : lookupError || `no amtp-dkim record at ${hostname}`,
      });
    });
    let addresses: string[] = [];
    let addressError = "";
    try {
      addresses = await this.dns.addresses(hostname);
    } catch (error) {
      addressError = (error as Error).message;
    }
    const local = addresses.filter(isLoopback);
    rows.push({
      name: hostname,
      type: "A/AAAA",
      value: "(this server's public address)",
      status: addresses.length ? "ok" : "missing",
      found: addresses,
      message: addressError ||
        (local.length
          ? `${local.join(", ")} ${
            local.length === 1
              ? "is a loopback address"
              : "are loopback addresses"
          }: only servers on this machine reach it`
          : ""),
    });
    return rows;
  }

  /** This server as `amtp-servers` names it: `host` on port 443, else `host:port`. */
  #published(): string {
    const { hostname } = this.#deps.config;
    const port = this.#deps.port();
    return port === 443 ? hostname : `${hostname}:${port}`;
  }

  /** The delivery policy this server publishes for its domains, or undefined when `AMTP_POLICY_MODE=off`. */
  async policy(): Promise<{ document: string; id: string } | undefined> {
    const { config } = this.#deps;
    if (config.policyMode === "off") return undefined;
    const keys = [
      ...this.keys.publicKeys().map(keyText),
      ...config.policyKeys.map(policyKeyOf).filter((k): k is string =>
        k !== undefined
      ),
    ];
    const document = policyDocument({
      mode: config.policyMode,
      servers: config.policyServers.length
        ? config.policyServers
        : [this.#published()],
      keys: [...new Set(keys)],
      max_age: config.policyMaxAge,
    });
    return { document, id: await policyId(document) };
  }

  /**
   * Serve `https://amtp-policy.<hosted domain>/.well-known/amtp-policy.json`;
   * undefined for any other request.
   */
  async handleHttp(request: Request): Promise<Response | undefined> {
    const url = new URL(request.url);
    if (url.pathname !== POLICY_PATH) return undefined;
    const host = (request.headers.get("host") ?? url.host).replace(
      /:\d+$/,
      "",
    ).toLowerCase();
    const domain = host.startsWith("amtp-policy.")
      ? host.slice("amtp-policy.".length)
      : "";
    const policy = await this.policy();
    if (
      !policy || !domain || !(await this.#deps.accounts.getDomain(domain))
    ) {
      return new Response("no delivery policy here\n", { status: 404 });
    }
    return new Response(policy.document, {
      headers: {
        "content-type": "application/json",
        "cache-control": "no-store",
      },
    });
  }

  /** Admin commands: the queue and the DNS check. */
  adminCommands(): Command[] {
    const view = (item: OutboundItem) => {
      const { payload: _, ...rest } = item;
      return { ...rest, next_attempt: new Date(item.next_attempt) };
    };
    return [
      defineCommand({
        name: "admin_get_queue",
        auth: "admin",
        params: {
          domain: { type: "string", optional: true, max: 253 },
          limit: { type: "int", optional: true, min: 1, max: 500 },
        },
        handler: async (p) => ({
          items: (await this.queue.list(p.limit ?? 100, p.domain)).map(view),
        }),
      }),
      defineCommand({
        name: "admin_retry_queue",
        auth: "admin",
        params: { id: { type: "string", max: 400 } },
        handler: async (p) => {
          if (!(await this.queue.retry(p.id))) {
            throw new ProtocolError(
              ErrorCode.NOT_FOUND,
              `no queued item ${p.id}`,
            );
          }
          return { id: p.id };
        },
      }),
      defineCommand({
        name: "admin_del_queue",
        auth: "admin",
        params: { id: { type: "string", max: 400 } },
        handler: async (p) => {
          if (!(await this.queue.remove(p.id))) {
            throw new ProtocolError(
              ErrorCode.NOT_FOUND,
              `no queued item ${p.id}`,
            );
          }
          return { id: p.id };
        },
      }),
      defineCommand({
        name: "admin_get_policy_reports",
        auth: "admin",
        params: {},
        handler: () => ({ reports: this.policies.reports() }),
      }),
      defineCommand({
        name: "admin_dns_check",
        auth: "admin",
        params: { domain: { type: "string", optional: true, max: 253 } },
        handler: async (p) => {
          const domains = p.domain
            ? [p.domain.toLowerCase()]
            : (await this.#deps.accounts.listDomains({ limit: 500 })).items.map(
              (d) => d.name,
            );
          const records = await this.checkDns(domains);
          return {
            hostname: this.#deps.config.hostname,
            records,
            ok: records.every((r) => r.status === "ok"),
          };
        },
      }),
    ];
  }

  /** Stop the queue and close peer sessions. */
  async close(): Promise<void> {
    await this.queue.stop();
    await this.pool.close();
  }
}

/**
 * Why a host name cannot be reached by other servers (a loopback name, an
 * IP address, a single label), or undefined when it may be public.
 */
export function unroutableName(host: string): string | undefined {
  const name = host.toLowerCase().replace(/\.$/, "");
  if (name === "localhost" || name.endsWith(".localhost")) {
    return "is a name for this machine only";
  }
  if (/^[0-9.]+$/.test(name) || name.includes(":")) {
    return "is an IP address, not a DNS name";
  }
  if (!name.includes(".")) return "is a single-label name";
  return undefined;
}

function isLoopback(address: string): boolean {
  return address.startsWith("127.") || address === "::1";
}
