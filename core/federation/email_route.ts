/**
 * The email route of the outbound queue: a recipient whose domain publishes
 * no `amtp-servers` record but receives mail (an MX record, else an address:
 * RFC 5321 section 5.1) gets the message as ordinary email. The payload's own
 * module composes it (RFC 5322), the core signs it with the sending domain's
 * DKIM keys, and the gateway module that carries `smtp` sends it to the
 * domain's mail servers in order of preference (or its relay).
 *
 * Per recipient, the remote server's answer decides: 2xx delivered, 5xx
 * refused for good ({@link ErrorCode.REMOTE_REFUSED}, with the remote's
 * text: the queue bounces it at once), 4xx or no answer tried again later.
 *
 * @module
 */

import type { OutboundItem } from "../../kv/outbound.ts";
import { ErrorCode, ProtocolError } from "../protocol/mod.ts";
import type {
  ComposeRequest,
  MailHost,
  RecipientResult,
  TransportRequest,
  TransportResult,
} from "./delivery.ts";
import type { DkimKeys } from "./dkim.ts";
import { DnsError, type DnsResolver } from "./dns.ts";

/** What the email route needs. */
export interface EmailRouteOptions {
  /** DNS (MX and addresses). */
  dns: DnsResolver;
  /** The hosted domains' DKIM keys. */
  dkim: DkimKeys;
  /** Have a module compose one of its payloads (the module host). */
  compose: (
    module: string,
    request: ComposeRequest,
  ) => Promise<{ raw: Uint8Array }>;
  /** Hand a message to the gateway that carries `smtp`. */
  transport: (request: TransportRequest) => Promise<TransportResult>;
  /** Whether a gateway carries `smtp` now. */
  available: () => boolean;
}

/** Delivers queued items as email. */
export class EmailRoute {
  readonly #options: EmailRouteOptions;

  /** The route with its parts. */
  constructor(options: EmailRouteOptions) {
    this.#options = options;
  }

  /** Whether a gateway carries email now. */
  get available(): boolean {
    return this.#options.available();
  }

  /**
   * A domain's mail servers, each with its addresses, by preference.
   *
   * @throws {ProtocolError} NO_AMTP_RECORD (it receives no email at all) or
   *   REMOTE_UNREACHABLE (DNS failed: temporary)
   */
  async hosts(domain: string): Promise<MailHost[]> {
    const { dns } = this.#options;
    let names: string[];
    try {
      names = await dns.mailHosts(domain);
    } catch (error) {
      if (error instanceof DnsError && error.code === "no_record") {
        throw new ProtocolError(
          ErrorCode.NO_AMTP_RECORD,
          `${domain} publishes no amtp-servers record and receives no email: ${error.message}`,
        );
      }
      throw new ProtocolError(
        ErrorCode.REMOTE_UNREACHABLE,
        (error as Error).message,
        { transient: true },
      );
    }
    const hosts: MailHost[] = [];
    for (const host of names.slice(0, 10)) {
      const addresses = await dns.addresses(host).catch(() => []);
      if (addresses.length) hosts.push({ host, addresses });
    }
    if (hosts.length === 0) {
      throw new ProtocolError(
        ErrorCode.REMOTE_UNREACHABLE,
        `no mail server of ${domain} has an address (${names.join(", ")})`,
        { transient: true },
      );
    }
    return hosts;
  }

  /** Deliver an item as email; the result per recipient. */
  async deliver(item: OutboundItem): Promise<RecipientResult[]> {
    const hosts = await this.hosts(item.domain);
    const { raw } = await this.#options.compose(item.module, {
      from: item.from,
      to: item.to,
      id: item.delivery_id,
      payload: item.payload,
    });
    const sender = item.from.slice(item.from.lastIndexOf("@") + 1);
    const signed = await this.#options.dkim.sign(sender, raw);
    const answer = await this.#options.transport({
      route: "smtp",
      from: item.from,
      to: item.to,
      id: item.id,
      raw: signed,
      hosts,
    });
    return item.to.map((address): RecipientResult => {
      const r = answer.recipients.find((x) => x.address === address);
      if (r?.status === "delivered") return { address, status: "delivered" };
      return {
        address,
        status: "failed",
        error: r?.status === "failed"
          ? ErrorCode.REMOTE_REFUSED
          : ErrorCode.REMOTE_UNREACHABLE,
        message: r?.reply ?? "the gateway said nothing of this recipient",
      };
    });
  }
}
