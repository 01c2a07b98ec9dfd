/**
 * DNS for federation: TXT lookups through the system resolver or a configured
 * name server, with a timeout and a cache, and the parsers of the two AMTP
 * records.
 *
 * - `amtp-servers=host[:port],host[:port],...` at a domain: its servers in
 *   priority order; the port defaults to 443; IPv6 literals in brackets.
 * - `amtp-dkim=v=DKIM1;h=sha256;k=ed25519|rsa;p=BASE64` at a server's host
 *   name: a public key it signs with (several records during a key rotation).
 *
 * The strings of one TXT record are joined before parsing (a resolver may
 * split a long record).
 *
 * @module
 */

import { probeDns, systemNameServer } from "./dns_probe.ts";

/** Seconds a lookup is cached by default (Deno's resolver does not report TTLs). */
export const CACHE_SECONDS = 60;

/** One server of a domain. */
export interface ServerAddress {
  /** Host name or IP literal (without brackets). */
  host: string;
  /** Port (443 when not given). */
  port: number;
}

/** A published server key. */
export interface DkimKey {
  /** `ed25519` or `rsa`. */
  algorithm: "ed25519" | "rsa";
  /** Key bytes: raw 32 bytes for Ed25519, SPKI DER for RSA. */
  key: Uint8Array;
}

/** A lookup that found no record, or failed. */
export class DnsError extends Error {
  /** `no_record` (permanent: the name has no such record) or `lookup_failed` (try again later). */
  readonly code: "no_record" | "lookup_failed";

  /** Create the error. */
  constructor(code: "no_record" | "lookup_failed", message: string) {
    super(message);
    this.name = "DnsError";
    this.code = code;
  }
}

/** Parse the value after `amtp-servers=`. */
export function parseServers(value: string): ServerAddress[] {
  const out: ServerAddress[] = [];
  for (const raw of value.split(",")) {
    const item = raw.trim();
    if (!item) continue;
    const v6 = item.match(/^\[([0-9a-fA-F:.]+)\](?::(\d{1,5}))?$/);
    if (v6) {
      out.push({ host: v6[1], port: v6[2] ? Number(v6[2]) : 443 });
      continue;
    }
    const plain = item.match(/^([a-zA-Z0-9.-]+)(?::(\d{1,5}))?$/);
    if (!plain) continue;
    const port = plain[2] ? Number(plain[2]) : 443;
    if (port < 1 || port > 65535) continue;
    out.push({ host: plain[1].toLowerCase(), port });
  }
  return out;
}

function fromBase64(text: string): Uint8Array {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** Parse the value after `amtp-dkim=`; undefined when it is not usable. */
export function parseDkim(value: string): DkimKey | undefined {
  const tags = new Map<string, string>();
  for (const part of value.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0) {
      tags.set(
        part.slice(0, eq).trim().toLowerCase(),
        part.slice(eq + 1).replace(/\s+/g, ""),
      );
    }
  }
  if ((tags.get("v") ?? "DKIM1") !== "DKIM1") return undefined;
  const k = (tags.get("k") ?? "rsa").toLowerCase();
  if (k !== "ed25519" && k !== "rsa") return undefined;
  try {
    const key = fromBase64(tags.get("p") ?? "");
    if (key.length === 0) return undefined;
    return { algorithm: k, key };
  } catch {
    return undefined;
  }
}

/** Options of {@link DnsResolver}. */
export interface DnsOptions {
  /** `ip:port` of a name server; the system resolver otherwise. */
  nameServer?: string;
  /** Milliseconds before a lookup fails. */
  timeoutMs?: number;
  /** Seconds an answer is reused ({@link CACHE_SECONDS} by default; 0: never). */
  cacheSeconds?: number;
}

/** Cached TXT and address lookups. */
export class DnsResolver {
  readonly #nameServer?: { ipAddr: string; port: number };
  readonly #timeoutMs: number;
  readonly #cacheMs: number;
  readonly #cache = new Map<
    string,
    { at: number; value: string[] | DnsError }
  >();

  /** Create a resolver. */
  constructor(options: DnsOptions = {}) {
    if (options.nameServer) {
      const at = options.nameServer.lastIndexOf(":");
      this.#nameServer = {
        ipAddr: options.nameServer.slice(0, at),
        port: Number(options.nameServer.slice(at + 1)),
      };
    }
    this.#timeoutMs = options.timeoutMs ?? 5000;
    this.#cacheMs = (options.cacheSeconds ?? CACHE_SECONDS) * 1000;
  }

  /** Forget cached answers (after a DNS change, and in tests). */
  clear(): void {
    this.#cache.clear();
  }

  async #lookup(
    name: string,
    type: "TXT" | "A" | "AAAA" | "MX",
  ): Promise<string[]> {
    const cacheKey = `${type} ${name}`;
    const hit = this.#cache.get(cacheKey);
    if (hit && Date.now() - hit.at < this.#cacheMs) {
      if (hit.value instanceof DnsError) throw hit.value;
      return hit.value;
    }
    let value: string[] | DnsError;
    try {
      const options: Deno.ResolveDnsOptions = {
        signal: AbortSignal.timeout(this.#timeoutMs),
      };
      if (this.#nameServer) options.nameServer = this.#nameServer;
      const answer = type === "TXT"
        ? (await Deno.resolveDns(name, "TXT", options)).map((parts) =>
          parts.join("")
        )
        : type === "MX"
        ? (await Deno.resolveDns(name, "MX", options)).map((mx) =>
          `${mx.preference} ${mx.exchange}`
        )
        : await Deno.resolveDns(name, type, options);
      value = answer;
    } catch (error) {
      // Deno reports SERVFAIL and REFUSED as NotFound too: ask again to
      // know whether the name really has no such record.
      const notFound = error instanceof Deno.errors.NotFound &&
        await this.#confirmNone(name, type);
      value = new DnsError(
        notFound ? "no_record" : "lookup_failed",
        notFound
          ? `no ${type} record at ${name}`
          : error instanceof Deno.errors.NotFound
          ? `DNS lookup of ${name} failed: the name server did not answer it (SERVFAIL, REFUSED or no answer)`
          : `DNS lookup of ${name} failed: ${(error as Error).message}`,
      );
    }
    this.#cache.set(cacheKey, { at: Date.now(), value });
    if (value instanceof DnsError) throw value;
    return value;
  }

  /**
   * After a NotFound: true when the name server says NXDOMAIN or answers
   * without a record of the type (permanent), false when it fails or does
   * not answer (temporary). With the system resolver and no readable
   * /etc/resolv.conf, NotFound is taken as it is.
   */
  async #confirmNone(name: string, type: "TXT" | "A" | "AAAA" | "MX") {
    const server = this.#nameServer ?? await systemNameServer();
    if (!server) return true;
    return await probeDns(name, type, server, this.#timeoutMs) === "no_record";
  }

  /** TXT records of a name, each one string. */
  txt(name: string): Promise<string[]> {
    return this.#lookup(name, "TXT");
  }

  /**
   * The servers of a domain, in priority order.
   *
   * @throws {DnsError} `no_record` when the domain publishes no `amtp-servers`
   */
  async servers(domain: string): Promise<ServerAddress[]> {
    let records: string[];
    try {
      records = await this.txt(domain);
    } catch (error) {
      if (error instanceof DnsError && error.code === "no_record") {
        throw new DnsError(
          "no_record",
          `${domain} publishes no amtp-servers record`,
        );
      }
      throw error;
    }
    const record = records.find((r) => r.startsWith("amtp-servers="));
    if (!record) {
      throw new DnsError(
        "no_record",
        `${domain} publishes no amtp-servers record`,
      );
    }
    const servers = parseServers(record.slice("amtp-servers=".length));
    if (servers.length === 0) {
      throw new DnsError(
        "no_record",
        `the amtp-servers record of ${domain} lists no usable server`,
      );
    }
    return servers;
  }

  /** The keys a server host publishes. */
  async keys(host: string): Promise<DkimKey[]> {
    let records: string[];
    try {
      records = await this.txt(host);
    } catch (error) {
      if (error instanceof DnsError && error.code === "no_record") return [];
      throw error;
    }
    return records.filter((r) => r.startsWith("amtp-dkim="))
      .map((r) => parseDkim(r.slice("amtp-dkim=".length)))
      .filter((k): k is DkimKey => k !== undefined);
  }

  /**
   * The mail servers of a domain (RFC 5321 section 5.1): its MX hosts by
   * preference, else the domain itself when it has an address; none for a
   * null MX (RFC 7505, `0 .`).
   *
   * @throws {DnsError} `no_record` when it has neither, `lookup_failed`
   */
  async mailHosts(domain: string): Promise<string[]> {
    let hosts: string[] = [];
    try {
      hosts = await this.mx(domain);
    } catch (error) {
      if (!(error instanceof DnsError && error.code === "no_record")) {
        throw error;
      }
    }
    if (hosts.length === 1 && hosts[0] === "") {
      throw new DnsError("no_record", `${domain} accepts no mail (null MX)`);
    }
    if (hosts.length > 0) return hosts.filter((h) => h !== "");
    // No MX: the domain itself, when it has an address (a lookup that
    // failed is temporary, not "none").
    let failed: DnsError | undefined;
    for (const type of ["A", "AAAA"] as const) {
      try {
        if ((await this.#lookup(domain, type)).length > 0) return [domain];
      } catch (error) {
        if (error instanceof DnsError && error.code === "lookup_failed") {
          failed = error;
        }
      }
    }
    if (failed) throw failed;
    throw new DnsError(
      "no_record",
      `${domain} has no MX record and no address`,
    );
  }

  /**
   * The MX hosts of a domain by preference (lowercase, without the final
   * dot; `""` is a null MX).
   *
   * @throws {DnsError} `no_record` when it has none, `lookup_failed`
   */
  async mx(domain: string): Promise<string[]> {
    const records = await this.#lookup(domain, "MX");
    const hosts = records.map((r) => {
      const [pref, host = ""] = r.split(" ");
      return {
        pref: Number(pref),
        host: host.replace(/\.$/, "").toLowerCase(),
      };
    }).sort((a, b) => a.pref - b.pref);
    return [...new Set(hosts.map((h) => h.host))];
  }

  /** IP addresses of a host (an IP literal is returned as it is). */
  async addresses(host: string): Promise<string[]> {
    if (/^[0-9.]+$/.test(host) || host.includes(":")) return [host];
    const v4 = await this.#lookup(host, "A").catch(() => [] as string[]);
    const v6 = v4.length
      ? []
      : await this.#lookup(host, "AAAA").catch(() => [] as string[]);
    if (v4.length + v6.length === 0) {
      throw new DnsError("lookup_failed", `${host} has no address`);
    }
    return [...v4, ...v6];
  }
}
