/**
 * Why a DNS lookup found nothing. `Deno.resolveDns` reports NXDOMAIN, an
 * empty answer, SERVFAIL and REFUSED alike as `NotFound`; federation must
 * tell them apart, because only "the name has no such record" is a
 * permanent answer (error 504), while a resolver that fails is a temporary
 * one (505, retried). This asks the same name server once more, over UDP,
 * and reads the response code from the header (RFC 1035 §4.1.1).
 *
 * @module
 */

import dgram from "node:dgram";

/** What the name server said. */
export type ProbeResult =
  /** NXDOMAIN, or NOERROR with no record of the type: a real "none". */
  | "no_record"
  /** SERVFAIL, REFUSED, another error code, a record after all, or no answer in time. */
  | "failed";

const TYPES = { A: 1, AAAA: 28, TXT: 16, MX: 15 } as const;

/** A DNS query for one name and type, with recursion desired. */
export function dnsQuery(
  id: number,
  name: string,
  type: keyof typeof TYPES,
): Uint8Array {
  const labels = name.replace(/\.$/, "").split(".").filter(Boolean);
  const parts: number[] = [
    id >> 8,
    id & 0xff,
    0x01, // RD
    0x00,
    0,
    1, // QDCOUNT
    0,
    0,
    0,
    0,
    0,
    0,
  ];
  for (const label of labels) {
    const bytes = new TextEncoder().encode(label);
    parts.push(bytes.length, ...bytes);
  }
  parts.push(0, 0, TYPES[type], 0, 1); // QTYPE, QCLASS IN
  return new Uint8Array(parts);
}

/** The name server of the system resolver: the first `nameserver` of /etc/resolv.conf. */
export async function systemNameServer(): Promise<
  { ipAddr: string; port: number } | undefined
> {
  try {
    const text = await Deno.readTextFile("/etc/resolv.conf");
    const match = text.match(/^\s*nameserver\s+(\S+)/m);
    return match ? { ipAddr: match[1], port: 53 } : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Ask `server` for `name`'s `type` records and classify the answer. An
 * answer with records (the first lookup failed for another reason) is
 * `failed` too: the caller found nothing it could use, and must not call
 * that permanent.
 */
export function probeDns(
  name: string,
  type: keyof typeof TYPES,
  server: { ipAddr: string; port: number },
  timeoutMs: number,
): Promise<ProbeResult> {
  const id = crypto.getRandomValues(new Uint16Array(1))[0];
  const socket = dgram.createSocket(
    server.ipAddr.includes(":") ? "udp6" : "udp4",
  );
  return new Promise<ProbeResult>((resolve) => {
    const done = (result: ProbeResult) => {
      clearTimeout(timer);
      try {
        socket.close();
      } catch {
        // Already closed.
      }
      resolve(result);
    };
    const timer = setTimeout(() => done("failed"), timeoutMs);
    socket.on("error", () => done("failed"));
    socket.on("message", (message: Uint8Array) => {
      if (message.length < 12 || ((message[0] << 8) | message[1]) !== id) {
        return; // Not the answer to this query.
      }
      const rcode = message[3] & 0x0f;
      const answers = (message[6] << 8) | message[7];
      if (rcode === 3) done("no_record"); // NXDOMAIN
      else if (rcode === 0 && answers === 0) done("no_record"); // NODATA
      else done("failed");
    });
    socket.send(dnsQuery(id, name, type), server.port, server.ipAddr);
  });
}
