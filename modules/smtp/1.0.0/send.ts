/**
 * The gateway's outbound side: a message the core composed and signed goes
 * to the destination's mail servers in order of preference (each of its
 * addresses in turn), or to the configured relay (with its login), by
 * nodemailer's SMTP client. STARTTLS whenever the server offers it (no
 * certificate check: opportunistic, as between mail servers; a relay's
 * certificate is checked, against the system's CAs or, when the admin
 * names them, only the CAs of `AMTP_SMTP_RELAY_CA`); a server whose TLS fails is tried again in
 * clear. Per recipient: 2xx delivered, 5xx failed with the server's words,
 * anything else deferred.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { isIP } from "node:net";
import SMTPConnection from "nodemailer/lib/smtp-connection/index.js";
import type {
  MailHost,
  TransportRecipient,
  TransportRequest,
  TransportResult,
} from "../../../workers/sdk/mod.ts";
import type { Settings } from "./settings.ts";

/** An SMTP error as nodemailer reports it. */
interface SmtpError extends Error {
  code?: string;
  responseCode?: number;
  response?: string;
  rejected?: string[];
  rejectedErrors?: SmtpError[];
  recipient?: string;
}

interface Sent {
  accepted: string[];
  rejected: string[];
  rejectedErrors?: SmtpError[];
  response: string;
}

/** One attempt on one address: the result, or the error that stopped it. */
async function attempt(
  settings: Settings,
  target: { host: string; address: string; port: number; relay: boolean },
  request: TransportRequest,
  tls: boolean,
): Promise<Sent> {
  const relay = settings.relay;
  const connection = new SMTPConnection({
    host: target.address,
    port: target.port,
    name: settings.hostname,
    secure: target.relay && target.port === 465,
    opportunisticTLS: tls,
    ignoreTLS: !tls,
    requireTLS: target.relay && tls && target.port !== 25,
    tls: {
      // SNI takes a name only: a relay named by its IP address is checked
      // against the address (its certificate's IP entries).
      servername: isIP(target.host) ? undefined : target.host,
      rejectUnauthorized: target.relay,
      minVersion: "TLSv1.2",
      // The admin's CAs for the relay: in Deno's node:tls `ca` replaces
      // the system's roots (reading those would need system access).
      ...(target.relay && relay?.ca ? { ca: [relay.ca] } : {}),
    },
    connectionTimeout: settings.timeout * 1000,
    greetingTimeout: settings.timeout * 1000,
    socketTimeout: settings.timeout * 1000,
    logger: false,
  });
  try {
    await new Promise<void>((resolve, reject) => {
      connection.once("error", reject);
      connection.connect(() => resolve());
    });
    if (target.relay && relay?.user) {
      await new Promise<void>((resolve, reject) =>
        connection.login(
          { user: relay.user!, pass: relay.password ?? "" },
          (error?: Error | null) => error ? reject(error) : resolve(),
        )
      );
    }
    return await new Promise<Sent>((resolve, reject) =>
      connection.send(
        { from: request.from, to: request.to },
        Buffer.from(
          request.raw.buffer,
          request.raw.byteOffset,
          request.raw.byteLength,
        ),
        (error: Error | null, info: Sent) =>
          error ? reject(error) : resolve(info),
      )
    );
  } finally {
    try {
      connection.quit();
    } catch {
      connection.close();
    }
  }
}

/** The reply text of an error, as the remote said it when it did. */
function words(error: SmtpError): string {
  return (error.response ?? error.message ?? String(error)).slice(0, 1000);
}

/** Results for every recipient from one finished conversation. */
function resultsOf(
  request: TransportRequest,
  sent: Sent,
): TransportRecipient[] {
  return request.to.map((address) => {
    if (sent.accepted.includes(address)) {
      return { address, status: "delivered", reply: sent.response };
    }
    const error = sent.rejectedErrors?.find((e) => e.recipient === address);
    const code = error?.responseCode ?? 0;
    return {
      address,
      status: code >= 500 ? "failed" : "deferred",
      reply: error ? words(error) : "refused",
    };
  });
}

/** Send a message; answers per recipient, never throws. */
export async function transport(
  settings: Settings,
  request: TransportRequest,
): Promise<TransportResult> {
  const relay = settings.relay;
  const hosts: (MailHost & { port: number; relay: boolean })[] = relay
    ? [{
      host: relay.host,
      addresses: [relay.host],
      port: relay.port,
      relay: true,
    }]
    : request.hosts.map((h) => ({
      ...h,
      port: settings.remotePort,
      relay: false,
    }));
  const tried: string[] = [];
  for (const host of hosts) {
    for (const address of host.addresses.slice(0, 4)) {
      const target = {
        host: host.host,
        address,
        port: host.port,
        relay: host.relay,
      };
      let error: SmtpError | undefined;
      for (const tls of [true, false]) {
        try {
          return {
            recipients: resultsOf(
              request,
              await attempt(settings, target, request, tls),
            ),
          };
        } catch (caught) {
          error = caught as SmtpError;
          // A TLS handshake that failed: the same server again, in clear
          // (opportunistic TLS); a relay is never used in clear.
          if (error.code !== "ETLS" || host.relay) break;
        }
      }
      if (!error) continue;
      const code = error.responseCode ?? 0;
      if (error.code === "EENVELOPE" && error.rejectedErrors?.length) {
        // Every recipient refused at RCPT: each with its own reply.
        return {
          recipients: resultsOf(request, {
            accepted: [],
            rejected: error.rejected ?? [],
            rejectedErrors: error.rejectedErrors,
            response: words(error),
          }),
        };
      }
      if (code >= 400 && ["EENVELOPE", "EMESSAGE"].includes(error.code ?? "")) {
        // Refused by the server that took the conversation: its answer
        // stands for everyone (a 5xx fails, a 4xx defers).
        const status = code >= 500 ? "failed" : "deferred";
        return {
          recipients: request.to.map((address) => ({
            address,
            status,
            reply: words(error!),
          })),
        };
      }
      tried.push(`${host.host} [${address}]:${host.port}: ${words(error)}`);
    }
  }
  return {
    recipients: request.to.map((address) => ({
      address,
      status: "deferred",
      reply: `no mail server took the message: ${tried.join("; ")}`.slice(
        0,
        2000,
      ),
    })),
  };
}
