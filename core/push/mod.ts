/**
 * Web Push (PROTOCOL.md §10.2): notifications of new mail to browsers (and
 * native apps) whose app is closed, through their push service. Messages are
 * encrypted to the subscription's keys (RFC 8291, `aes128gcm`) and signed
 * with the server's VAPID key (RFC 8292) by the npm `web-push` package; this
 * file sends them itself, over the federation's HTTPS client, to an address
 * it resolved and checked is public (push endpoints are URLs users give: a
 * server must not be made to post to its own network).
 *
 * A notification carries only what the subscription's `preview` allows and
 * never a body; payloads are padded to one size. Deliveries to one
 * subscription never overlap: new mail while one is on its way is counted
 * into the next.
 *
 * @module
 */

// @ts-types="./web_push.d.ts"
import webpush from "web-push";
import type {
  PushPreview,
  PushStore,
  PushSubscriptionRecord,
  VapidKeys,
} from "../../kv/mod.ts";
import { httpsRequest, type HttpsResponse } from "../federation/https.ts";
import type { Logger } from "../log/mod.ts";
import { ErrorCode, ProtocolError } from "../protocol/mod.ts";

/** Subscriptions one user may hold. */
export const MAX_SUBSCRIPTIONS = 10;
/** Bytes of every payload before encryption (its size says nothing). */
export const PAYLOAD_SIZE = 1024;
/** Longest endpoint URL. */
export const MAX_ENDPOINT = 1024;
/** Failed deliveries in a row after which a subscription is dropped. */
export const MAX_FAILURES = 20;
/** What a notification may show, in order of what it reveals. */
export const PREVIEWS: readonly PushPreview[] = ["none", "sender", "full"];

/** How the server reaches push services. */
export interface WebPushOptions {
  /** Subscriptions and the VAPID key. */
  store: PushStore;
  /** The VAPID `sub`: a `mailto:` or `https:` contact for push services. */
  contact: string;
  /** Allow endpoints on loopback and private addresses (tests, closed networks). */
  allowPrivate: boolean;
  /** Extra root certificates (PEM) trusted for push services. */
  caCerts: string[];
  /** Logger. */
  log: Logger;
  /** Milliseconds for one delivery. Default 10 000. */
  timeoutMs?: number;
  /** The addresses of a host name (tests; the system resolver otherwise). */
  resolve?: (host: string) => Promise<string[]>;
}

/** What a client sends to subscribe. */
export interface NewSubscription {
  /** The push service's endpoint. */
  endpoint: string;
  /** P-256 public key, uncompressed (65 bytes). */
  p256dh: Uint8Array;
  /** Authentication secret (16 bytes). */
  auth: Uint8Array;
  /** Name of the browser or app. */
  label?: string;
  /** What notifications may show. */
  preview?: PushPreview;
}

/** The summary of a new message, as the messages module pushes it. */
export interface NewMessage {
  /** Copy id. */
  id?: unknown;
  /** Folder. */
  folder?: unknown;
  /** Sender. */
  from?: unknown;
  /** Subject (empty for end-to-end encrypted mail). */
  subject?: unknown;
  /** Whether it is end-to-end encrypted. */
  encrypted?: unknown;
}

function base64url(bytes: Uint8Array): string {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function fromBase64url(text: string): Uint8Array {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  return Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
}

async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest(
    "SHA-256",
    new TextEncoder().encode(text),
  );
  return Array.from(
    new Uint8Array(digest),
    (b) => b.toString(16).padStart(2, "0"),
  ).join("");
}

/** True for an address no push service has: loopback, private, link-local, multicast. */
export function isPrivateAddress(ip: string): boolean {
  const v4 = ip.match(/^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.(\d+)$/i);
  if (v4) {
    const [a, b] = [Number(v4[1]), Number(v4[2])];
    return a === 0 || a === 10 || a === 127 || a >= 224 ||
      (a === 100 && b >= 64 && b <= 127) || (a === 169 && b === 254) ||
      (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) ||
      (a === 198 && (b === 18 || b === 19));
  }
  const v6 = ip.toLowerCase().replace(/^\[|\]$/g, "");
  return v6 === "::" || v6 === "::1" || /^f[cd]/.test(v6) ||
    /^fe[89ab]/.test(v6) || v6.startsWith("ff");
}

function invalid(parameter: string, message: string): ProtocolError {
  return new ProtocolError(ErrorCode.INVALID_PARAMETER, message, {
    parameter,
  });
}

/** Delivery state of one subscription. */
interface Lane {
  busy: boolean;
  /** New messages not yet told. */
  waiting: number;
  /** The newest of them. */
  last?: NewMessage;
}

/** Web Push: subscriptions, and notifications of new messages. */
export class WebPush {
  readonly #options: WebPushOptions;
  readonly #vapid: VapidKeys;
  readonly #lanes = new Map<string, Lane>();
  readonly #running = new Set<Promise<void>>();
  #closed = false;

  private constructor(options: WebPushOptions, vapid: VapidKeys) {
    this.#options = options;
    this.#vapid = vapid;
  }

  /** Load (or make, on first start) the server's VAPID key pair. */
  static async open(options: WebPushOptions): Promise<WebPush> {
    const vapid = await options.store.vapid(() => webpush.generateVAPIDKeys());
    return new WebPush(options, vapid);
  }

  /** The VAPID public key (uncompressed P-256, 65 bytes): a browser's `applicationServerKey`. */
  get publicKey(): Uint8Array {
    return fromBase64url(this.#vapid.publicKey);
  }

  /**
   * Add (or replace: the same endpoint) a subscription of `address`.
   *
   * @throws {ProtocolError} INVALID_PARAMETER (endpoint, keys, preview),
   *   LIMIT_EXCEEDED past {@link MAX_SUBSCRIPTIONS}
   */
  async subscribe(
    address: string,
    input: NewSubscription,
  ): Promise<PushSubscriptionRecord> {
    const url = this.#checkEndpoint(input.endpoint);
    if (!url.hostname.startsWith("[") && !/^[\d.]+$/.test(url.hostname)) {
      // A name is checked again at every delivery (it may change).
      await this.#addresses(url);
    }
    if (input.p256dh.length !== 65 || input.p256dh[0] !== 4) {
      throw invalid("p256dh", "p256dh is an uncompressed P-256 key (65 bytes)");
    }
    try {
      await crypto.subtle.importKey(
        "raw",
        new Uint8Array(input.p256dh),
        { name: "ECDH", namedCurve: "P-256" },
        false,
        [],
      );
    } catch {
      throw invalid("p256dh", "p256dh is not a point of P-256");
    }
    if (input.auth.length !== 16) {
      throw invalid("auth", "auth is the 16-byte authentication secret");
    }
    const preview = input.preview ?? "sender";
    if (!PREVIEWS.includes(preview)) {
      throw invalid("preview", `preview is one of ${PREVIEWS.join(", ")}`);
    }
    const id = (await sha256Hex(input.endpoint)).slice(0, 16);
    const existing = await this.#options.store.list(address);
    if (
      !existing.some((s) => s.id === id) &&
      existing.length >= MAX_SUBSCRIPTIONS
    ) {
      throw new ProtocolError(
        ErrorCode.LIMIT_EXCEEDED,
        `at most ${MAX_SUBSCRIPTIONS} push subscriptions`,
      );
    }
    const record: PushSubscriptionRecord = {
      id,
      endpoint: input.endpoint,
      p256dh: input.p256dh,
      auth: input.auth,
      label: input.label ?? "",
      preview,
      created: new Date(),
      failures: 0,
    };
    await this.#options.store.put(address, record);
    return record;
  }

  /** An endpoint a push service could have: https, no credentials, not too long. */
  #checkEndpoint(endpoint: string): URL {
    let url: URL;
    try {
      url = new URL(endpoint);
    } catch {
      throw invalid("endpoint", "endpoint is not a URL");
    }
    if (endpoint.length > MAX_ENDPOINT) {
      throw invalid("endpoint", `endpoint is longer than ${MAX_ENDPOINT}`);
    }
    if (url.protocol !== "https:" || url.username || url.password) {
      throw invalid("endpoint", "endpoint is an https URL without credentials");
    }
    const host = url.hostname.replace(/^\[|\]$/g, "");
    if (
      !this.#options.allowPrivate &&
      (host === "localhost" || host.endsWith(".localhost") ||
        ((/^[\d.]+$/.test(host) || host.includes(":")) &&
          isPrivateAddress(host)))
    ) {
      throw invalid(
        "endpoint",
        "endpoint is on a loopback or private address (AMTP_PUSH_PRIVATE allows it)",
      );
    }
    return url;
  }

  /** The public addresses of an endpoint's host (its literal, or its name resolved). */
  async #addresses(url: URL): Promise<string[]> {
    const host = url.hostname.replace(/^\[|\]$/g, "");
    let addresses: string[];
    if (/^[\d.]+$/.test(host) || host.includes(":")) addresses = [host];
    else {
      const resolve = this.#options.resolve ?? (async (name: string) => {
        const found: string[] = [];
        for (const type of ["A", "AAAA"] as const) {
          found.push(
            ...await Deno.resolveDns(name, type, {
              signal: AbortSignal.timeout(5000),
            }).catch(() => [] as string[]),
          );
        }
        return found;
      });
      addresses = await resolve(host);
      if (addresses.length === 0) {
        throw invalid("endpoint", `endpoint host ${host} does not resolve`);
      }
    }
    if (!this.#options.allowPrivate && addresses.some(isPrivateAddress)) {
      throw invalid(
        "endpoint",
        `endpoint host ${host} is on a loopback or private address`,
      );
    }
    return addresses;
  }

  /** The subscriptions of `address`. */
  list(address: string): Promise<PushSubscriptionRecord[]> {
    return this.#options.store.list(address);
  }

  /** Remove a subscription; false when there was none. */
  unsubscribe(address: string, id: string): Promise<boolean> {
    return this.#options.store.delete(address, id);
  }

  /** Tell every subscription of `address` about a new message (returns at once). */
  newMessage(address: string, message: NewMessage): void {
    if (this.#closed) return;
    const work = this.#notify(address, message).catch((error) =>
      this.#options.log.warn("push_failed", { address, error: String(error) })
    );
    this.#running.add(work);
    work.finally(() => this.#running.delete(work));
  }

  async #notify(address: string, message: NewMessage): Promise<void> {
    const subscriptions = await this.#options.store.list(address);
    for (const subscription of subscriptions) {
      const key = `${address}\n${subscription.id}`;
      let lane = this.#lanes.get(key);
      if (!lane) this.#lanes.set(key, lane = { busy: false, waiting: 0 });
      lane.waiting++;
      lane.last = message;
      if (lane.busy) continue;
      lane.busy = true;
      const run = this.#drain(address, subscription, lane).finally(() => {
        lane!.busy = false;
        if (lane!.waiting === 0) this.#lanes.delete(key);
      });
      this.#running.add(run);
      run.finally(() => this.#running.delete(run));
    }
  }

  async #drain(
    address: string,
    subscription: PushSubscriptionRecord,
    lane: Lane,
  ): Promise<void> {
    while (lane.waiting > 0 && !this.#closed) {
      const count = lane.waiting;
      const last = lane.last!;
      lane.waiting = 0;
      await this.#deliver(address, subscription, count, last);
    }
  }

  /** The notification's content, as much as the subscription allows, padded. */
  payload(
    address: string,
    preview: PushPreview,
    count: number,
    message: NewMessage,
  ): string {
    const data: Record<string, unknown> = {
      v: 1,
      event: "message_new",
      account: address,
      count,
      id: typeof message.id === "string" ? message.id : undefined,
      folder: typeof message.folder === "string" ? message.folder : undefined,
      encrypted: message.encrypted === true,
    };
    if (preview !== "none" && typeof message.from === "string") {
      data.from = message.from;
    }
    if (
      preview === "full" && message.encrypted !== true &&
      typeof message.subject === "string"
    ) data.subject = message.subject.slice(0, 200);
    let text = JSON.stringify(data);
    // Every payload the same size: its length tells the push service nothing.
    const room = PAYLOAD_SIZE - text.length - 8;
    if (room > 0) text = JSON.stringify({ ...data, pad: " ".repeat(room) });
    return text;
  }

  async #deliver(
    address: string,
    subscription: PushSubscriptionRecord,
    count: number,
    message: NewMessage,
  ): Promise<void> {
    const { log, store } = this.#options;
    const body = this.payload(address, subscription.preview, count, message);
    let response: HttpsResponse;
    try {
      const url = this.#checkEndpoint(subscription.endpoint);
      const addresses = await this.#addresses(url);
      const request = webpush.generateRequestDetails(
        {
          endpoint: subscription.endpoint,
          keys: {
            p256dh: base64url(subscription.p256dh),
            auth: base64url(subscription.auth),
          },
        },
        body,
        {
          vapidDetails: {
            subject: this.#options.contact,
            publicKey: this.#vapid.publicKey,
            privateKey: this.#vapid.privateKey,
          },
          TTL: 24 * 3600,
          urgency: "normal",
          contentEncoding: "aes128gcm",
        },
      );
      const headers: Record<string, string> = {};
      for (const [name, value] of Object.entries(request.headers)) {
        if (name.toLowerCase() !== "content-length") {
          headers[name] = String(value);
        }
      }
      response = await httpsRequest(
        url.hostname.replace(/^\[|\]$/g, ""),
        `${url.pathname}${url.search}`,
        {
          addresses,
          port: Number(url.port || 443),
          caCerts: this.#options.caCerts,
          timeoutMs: this.#options.timeoutMs ?? 10_000,
          maxBytes: 16 * 1024,
        },
        {
          method: "POST",
          headers,
          body: new Uint8Array(request.body as Uint8Array),
        },
      );
    } catch (error) {
      log.warn("push_failed", {
        address,
        subscription: subscription.id,
        error: error instanceof ProtocolError ? error.message : String(error),
      });
      await this.#failed(address, subscription);
      return;
    }
    if (response.status === 404 || response.status === 410) {
      // The browser unsubscribed: the push service forgot the endpoint.
      log.info("push_subscription_gone", { address, id: subscription.id });
      await store.delete(address, subscription.id);
      return;
    }
    if (response.status < 200 || response.status > 299) {
      log.warn("push_refused", {
        address,
        subscription: subscription.id,
        status: response.status,
      });
      await this.#failed(address, subscription);
      return;
    }
    log.debug("push_sent", { address, subscription: subscription.id, count });
    await store.noteResult(address, subscription.id, true);
  }

  async #failed(
    address: string,
    subscription: PushSubscriptionRecord,
  ): Promise<void> {
    await this.#options.store.noteResult(address, subscription.id, false);
    const now = (await this.#options.store.list(address)).find((s) =>
      s.id === subscription.id
    );
    if (now && now.failures >= MAX_FAILURES) {
      await this.#options.store.delete(address, subscription.id);
      this.#options.log.warn("push_subscription_dropped", {
        address,
        id: subscription.id,
        failures: now.failures,
      });
    }
  }

  /** Resolves when every delivery started so far has finished (tests, shutdown). */
  async idle(): Promise<void> {
    while (this.#running.size) await Promise.allSettled([...this.#running]);
  }

  /** Stop: no new deliveries; those on their way finish. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.idle();
  }
}
