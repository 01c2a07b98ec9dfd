/**
 * What the gateway checks of a message it receives: SPF of the envelope
 * sender (or the HELO name), every DKIM signature, DMARC of the From domain
 * with its policy, and ARC, all by mailauth, with DNS through Deno's
 * resolver (the configured name server, answers kept a minute).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { authenticate } from "mailauth";
import type { EmailAuth } from "../../../workers/sdk/mod.ts";

/** Answers kept, and for how long. */
const CACHE_SIZE = 10_000;
const CACHE_MS = 60_000;

type Answer = unknown[] | { code: string; message: string };

/** A resolver in the shape mailauth asks for (node:dns's), over Deno.resolveDns. */
export function dnsResolver(
  nameServer?: { ipAddr: string; port: number },
  timeoutMs = 5000,
) {
  const cache = new Map<string, { at: number; answer: Answer }>();
  return async (name: string, type: string): Promise<unknown[]> => {
    const key = `${type} ${name}`;
    const hit = cache.get(key);
    let answer: Answer;
    if (hit && Date.now() - hit.at < CACHE_MS) answer = hit.answer;
    else {
      answer = await lookup(name, type, nameServer, timeoutMs);
      if (cache.size >= CACHE_SIZE) cache.delete(cache.keys().next().value!);
      cache.set(key, { at: Date.now(), answer });
    }
    if (!Array.isArray(answer)) {
      throw Object.assign(new Error(answer.message), { code: answer.code });
    }
    return answer;
  };
}

async function lookup(
  name: string,
  type: string,
  nameServer: { ipAddr: string; port: number } | undefined,
  timeoutMs: number,
): Promise<Answer> {
  const options: Deno.ResolveDnsOptions = {
    signal: AbortSignal.timeout(timeoutMs),
    ...(nameServer ? { nameServer } : {}),
  };
  try {
    switch (type) {
      case "TXT":
        return await Deno.resolveDns(name, "TXT", options);
      case "MX":
        return (await Deno.resolveDns(name, "MX", options)).map((mx) => ({
          exchange: mx.exchange.replace(/\.$/, ""),
          priority: mx.preference,
        }));
      case "A":
      case "AAAA":
        return await Deno.resolveDns(name, type, options);
      case "PTR":
        return await Deno.resolveDns(name, "PTR", options);
      default:
        return { code: "ENOTIMP", message: `no ${type} lookups` };
    }
  } catch (error) {
    // NotFound: no such name or record (a failing resolver looks the same
    // to Deno; mailauth then says "none" rather than "temperror").
    return error instanceof Deno.errors.NotFound
      ? { code: "ENOTFOUND", message: `no ${type} record at ${name}` }
      : { code: "ETIMEOUT", message: String((error as Error).message) };
  }
}

/** The verdict on a received message. */
export interface Verdict {
  /** The results, as the message's record keeps them. */
  auth: EmailAuth;
  /** Why it must be refused (the From domain's DMARC policy says reject), if it must. */
  reject?: string;
}

/** Check a received message. */
export async function verify(
  raw: Uint8Array,
  session: { ip: string; helo: string; mailFrom: string; tls: boolean },
  options: {
    hostname: string;
    resolver: ReturnType<typeof dnsResolver>;
  },
): Promise<Verdict> {
  const result = await authenticate(
    Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength),
    {
      ip: session.ip,
      helo: session.helo,
      sender: session.mailFrom,
      mta: options.hostname,
      resolver: options.resolver as never,
      disableBimi: true,
    },
  );
  const text = (v: unknown, max = 200) =>
    typeof v === "string" ? v.slice(0, max) : "";
  const spf = result.spf === false ? undefined : result.spf;
  const dmarc = result.dmarc === false ? undefined : result.dmarc;
  const status = (o: { status?: { result?: unknown } } | undefined) =>
    text(o?.status?.result, 32) || "none";
  const summary = (result.headers ?? "").match(
    /Authentication-Results:([\s\S]*?)(?:\r?\n(?![ \t])|$)/,
  )?.[1]?.replace(/\r?\n[ \t]+/g, " ").trim() ?? "";
  const auth: EmailAuth = {
    client_ip: session.ip,
    helo: session.helo.slice(0, 255),
    tls: session.tls,
    spf: { result: status(spf), domain: text(spf?.domain, 255) },
    dkim: (result.dkim?.results ?? []).slice(0, 10).map((r) => ({
      result: status(r),
      domain: text(r.signingDomain, 255),
      selector: text(r.selector, 255),
    })),
    dmarc: {
      result: status(dmarc),
      domain: text(dmarc?.domain, 255),
      policy: text(dmarc?.policy, 32) || "none",
    },
    arc: { result: status(result.arc || undefined) },
    summary: summary.slice(0, 2000),
  };
  const reject = auth.dmarc.result === "fail" && auth.dmarc.policy === "reject"
    ? `DMARC policy of ${auth.dmarc.domain} says reject: ${
      text(dmarc?.status?.comment)
    }`
    : undefined;
  return { auth, reject };
}
