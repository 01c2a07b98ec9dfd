/**
 * The gateway's inbound side (MX): ESMTP with STARTTLS (the server's
 * certificate), SIZE, 8BITMIME, SMTPUTF8 and PIPELINING, by smtp-server.
 *
 * - Mail only for local users, aliases and catch-alls: any other recipient
 *   is refused at RCPT with 550 (so nothing is accepted that would have to
 *   bounce later: no backscatter).
 * - Limits before buffering: connections in total and per IP, messages per
 *   minute per IP, RCPT commands per message (repeated and refused ones
 *   count), refused recipients per connection (then 421: no address
 *   harvesting), the message size (SIZE announced
 *   at MAIL FROM, then counted while it arrives), and the bytes all messages
 *   in progress may hold.
 * - SPF, DKIM, DMARC and ARC are checked (verify.ts); a From domain whose
 *   DMARC policy says reject, and that fails, is refused with 550.
 * - `250` only after the message is durable: the core has stored it in every
 *   mailbox (`mail.deliver`) before the reply is sent.
 *
 * @module
 */

import { Buffer } from "node:buffer";
import {
  SMTPServer,
  type SMTPServerAddress,
  type SMTPServerDataStream,
  type SMTPServerSession,
} from "smtp-server";
import type { ModuleContext } from "../../../workers/sdk/mod.ts";
import type { Settings } from "./settings.ts";
import { dnsResolver, verify } from "./verify.ts";

/** Bytes all messages in progress may hold together. */
const BUFFER_BUDGET = 128 * 1024 * 1024;
/** How often the certificate is checked for a renewal. */
const CERT_CHECK_MS = 10 * 60_000;

/** An SMTP reply as smtp-server sends it: an error with a code. */
function reply(code: number, text: string): Error {
  return Object.assign(new Error(text), { responseCode: code });
}

/** Recipients refused on one connection before it is closed (a directory harvest). */
const MAX_REFUSED = 10;

/** What one connection did so far. */
interface Counts {
  /** RCPT commands in this transaction, refused or repeated ones too. */
  rcpt: number;
  /** Recipients refused on this connection. */
  refused: number;
}

/** A token bucket per key (messages per minute per IP). */
class Rates {
  readonly #perMinute: number;
  readonly #buckets = new Map<string, { tokens: number; at: number }>();

  constructor(perMinute: number) {
    this.#perMinute = perMinute;
  }

  take(key: string, now = Date.now()): boolean {
    const bucket = this.#buckets.get(key) ??
      { tokens: this.#perMinute, at: now };
    bucket.tokens = Math.min(
      this.#perMinute,
      bucket.tokens + (now - bucket.at) * this.#perMinute / 60_000,
    );
    bucket.at = now;
    this.#buckets.set(key, bucket);
    if (this.#buckets.size > 100_000) {
      this.#buckets.delete(this.#buckets.keys().next().value!);
    }
    if (bucket.tokens < 1) return false;
    bucket.tokens--;
    return true;
  }
}

/** A running listener. */
export interface Receiver {
  /** The port it listens on. */
  port: number;
  /** Stop listening. */
  close(): Promise<void>;
}

/** Start the inbound side. */
export async function startReceiver(
  settings: Settings,
  ctx: ModuleContext,
): Promise<Receiver> {
  const resolver = dnsResolver(settings.dns);
  const rates = new Rates(settings.rate);
  const perIp = new Map<string, number>();
  const counts = new Map<string, Counts>();
  const countsOf = (session: SMTPServerSession) => {
    let c = counts.get(session.id);
    if (!c) counts.set(session.id, c = { rcpt: 0, refused: 0 });
    return c;
  };
  let buffered = 0;
  let cert = await ctx.tls.certificate();

  const server = new SMTPServer({
    name: settings.hostname,
    banner: "AMTP mail gateway",
    key: cert.key,
    cert: cert.cert,
    size: settings.maxSize,
    maxClients: settings.maxConnections,
    // Mail exchanger only: clients submit over AMTP, nobody logs in here.
    disabledCommands: ["AUTH"],
    authOptional: true,
    hideSTARTTLS: false,
    hide8BITMIME: false,
    hidePIPELINING: false,
    hideSMTPUTF8: false,
    socketTimeout: settings.timeout * 1000,
    closeTimeout: 5000,
    logger: false,
    onConnect(
      session: SMTPServerSession,
      done: (error?: Error | null) => void,
    ) {
      const ip = session.remoteAddress;
      const count = perIp.get(ip) ?? 0;
      if (count >= settings.maxPerIp) {
        return done(reply(421, "4.7.0 Too many connections from your address"));
      }
      perIp.set(ip, count + 1);
      done();
    },
    onClose(session: SMTPServerSession) {
      counts.delete(session.id);
      const ip = session.remoteAddress;
      const count = (perIp.get(ip) ?? 1) - 1;
      if (count <= 0) perIp.delete(ip);
      else perIp.set(ip, count);
    },
    onMailFrom(
      address: SMTPServerAddress,
      session: SMTPServerSession,
      done: (error?: Error | null) => void,
    ) {
      const size = Number(address.args ? address.args.SIZE ?? 0 : 0);
      if (size > settings.maxSize) {
        return done(
          reply(
            552,
            `5.3.4 Message too big: at most ${settings.maxSize} bytes`,
          ),
        );
      }
      if (!rates.take(session.remoteAddress)) {
        return done(reply(450, "4.7.1 Too many messages: try again later"));
      }
      countsOf(session).rcpt = 0;
      done();
    },
    onRcptTo(
      address: SMTPServerAddress,
      session: SMTPServerSession,
      done: (error?: Error | null) => void,
    ) {
      // Every RCPT counts, refused and repeated ones too (smtp-server
      // keeps one entry per address): a client cannot make the gateway
      // look up recipients without end.
      const c = countsOf(session);
      if (
        ++c.rcpt > settings.maxRecipients ||
        session.envelope.rcptTo.length >= settings.maxRecipients
      ) {
        return done(reply(452, "4.5.3 Too many recipients"));
      }
      const refuse = (code: number, text: string) => {
        // A harvest of addresses: the connection ends.
        if (++c.refused > MAX_REFUSED) {
          return done(reply(421, "4.7.0 Too many unknown recipients"));
        }
        done(reply(code, text));
      };
      ctx.accounts.resolve([address.address]).then(([r]) => {
        if (r.kind === "invalid") {
          refuse(553, `5.1.3 Bad recipient address: ${r.reason ?? ""}`);
        } else if (r.mailboxes.length > 0) done();
        else if (r.kind === "remote" || r.remote.length > 0) {
          refuse(550, "5.7.1 Relaying denied: not a local address");
        } else refuse(550, "5.1.1 No such user here");
      }, () => done(reply(451, "4.3.0 Temporary failure: try again later")));
    },
    onData(
      stream: SMTPServerDataStream,
      session: SMTPServerSession,
      done: (error?: Error | null, message?: string) => void,
    ) {
      const chunks: Buffer[] = [];
      let size = 0;
      let over = false;
      stream.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > settings.maxSize || over) {
          over = true;
          return; // drained, not kept
        }
        if (buffered + chunk.length > BUFFER_BUDGET) {
          over = true;
          return;
        }
        buffered += chunk.length;
        chunks.push(chunk);
      });
      stream.on("end", async () => {
        const held = chunks.reduce((n, c) => n + c.length, 0);
        const release = () => buffered -= held;
        if (size > settings.maxSize || stream.sizeExceeded) {
          release();
          return done(
            reply(
              552,
              `5.3.4 Message too big: at most ${settings.maxSize} bytes`,
            ),
          );
        }
        if (over) {
          release();
          return done(
            reply(452, "4.3.1 Insufficient system storage: try again later"),
          );
        }
        const raw = new Uint8Array(Buffer.concat(chunks));
        release();
        try {
          done(null, await accept(raw, session));
        } catch (error) {
          done(error as Error);
        }
      });
    },
  });

  /** Check and deliver a whole message; the text of the 250 reply. */
  async function accept(
    raw: Uint8Array,
    session: SMTPServerSession,
  ): Promise<string> {
    const mailFrom = session.envelope.mailFrom
      ? session.envelope.mailFrom.address
      : "";
    const began = performance.now();
    const verdict = await verify(raw, {
      ip: session.remoteAddress,
      helo: session.clientHostname || session.hostNameAppearsAs || "",
      mailFrom,
      tls: session.secure,
    }, { hostname: settings.hostname, resolver });
    if (verdict.reject) {
      ctx.log("info", "smtp_refused", {
        ip: session.remoteAddress,
        reason: verdict.reject.slice(0, 200),
      });
      throw reply(550, `5.7.1 ${verdict.reject}`);
    }
    const verified = performance.now();
    let result;
    try {
      result = await ctx.mail.deliver({
        mail_from: mailFrom,
        to: session.envelope.rcptTo.map((r) => r.address),
        raw,
        auth: verdict.auth,
      });
    } catch (error) {
      ctx.log("warn", "smtp_deliver_failed", {
        error: String((error as Error).message).slice(0, 200),
      });
      throw reply(451, "4.3.0 Temporary failure: try again later");
    }
    const delivered = result.recipients.filter((r) => r.status === "delivered");
    if (delivered.length === 0) {
      const first = result.recipients[0];
      throw first?.error === 206
        ? reply(552, `5.2.2 ${first.message ?? "Mailbox full"}`)
        : first?.error === 209 // the recipient's rules refused it
        ? reply(550, `5.7.1 ${first.message ?? "Rejected"}`)
        : reply(550, `5.1.1 ${first?.message ?? "Not delivered"}`);
    }
    ctx.log("info", "smtp_received", {
      ip: session.remoteAddress,
      size: raw.byteLength,
      recipients: delivered.length,
      dmarc: verdict.auth.dmarc.result,
      verify_ms: Math.round(verified - began),
      deliver_ms: Math.round(performance.now() - verified),
    });
    return `2.0.0 Ok: stored (${delivered.length} of ${result.recipients.length})`;
  }

  server.on("error", (error: Error) =>
    ctx.log("warn", "smtp_server_error", {
      error: String(error.message).slice(0, 200),
    }));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(settings.port, settings.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  const port = (server.server.address() as { port: number }).port;
  ctx.log("info", "smtp_listening", { host: settings.host, port });
  // A renewed certificate serves new connections.
  const timer = setInterval(async () => {
    try {
      const next = await ctx.tls.certificate();
      if (next.sha256 === cert.sha256) return;
      cert = next;
      server.updateSecureContext({ key: cert.key, cert: cert.cert });
      ctx.log("info", "smtp_certificate_renewed", {});
    } catch { /* the next check */ }
  }, CERT_CHECK_MS);
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        clearInterval(timer);
        server.close(() => resolve());
      }),
  };
}
