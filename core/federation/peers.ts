/**
 * The sending side of a server-to-server session: connect to one of a
 * domain's servers over QUIC (ALPN `amtp/1`, TLS verified for the server's
 * host name against the system roots plus configured CAs), open one stream of
 * BSON frames, authenticate, and send requests matched by requestID.
 *
 * @module
 */

import { ErrorCode, ProtocolError } from "../protocol/mod.ts";
import {
  decodeDocument,
  type Document,
  encodeDocument,
  FrameDecoder,
  type Response,
  S2S_ALPN,
} from "../wire/mod.ts";
import { toBase64 } from "../../shared/login/algorithms.ts";
import type { DnsResolver, ServerAddress } from "./dns.ts";
import type { ServerKeys } from "./keys.ts";
import { allowsServer, type PolicyStore } from "./policy.ts";
import { type Claim, signedText } from "./proof.ts";

/** How to reach peers. */
export interface PeerOptions {
  /** DNS. */
  dns: DnsResolver;
  /** Extra CA certificates (PEM) trusted for peers. */
  caCerts: string[];
  /** Milliseconds allowed to connect. */
  connectTimeoutMs: number;
  /** Milliseconds allowed for one request. */
  requestTimeoutMs: number;
  /** Largest frame accepted. */
  maxFrame: number;
}

function withTimeout<T>(
  promise: Promise<T>,
  ms: number,
  what: string,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout>;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`${what} timed out after ${ms} ms`)),
        ms,
      );
    }),
  ]).finally(() => clearTimeout(timer));
}

/** One session with a peer server. */
export class PeerClient {
  readonly server: ServerAddress;
  readonly #conn: Deno.QuicConn;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #pending = new Map<
    number,
    { resolve: (r: Response) => void; reject: (e: Error) => void }
  >();
  readonly #requestTimeoutMs: number;
  #nextId = 1;
  #closed = false;
  /** When it was last used (for idle closing). */
  lastUsed = Date.now();
  /** When it authenticated (epoch milliseconds; 0 before). */
  authenticatedAt = 0;

  private constructor(
    server: ServerAddress,
    conn: Deno.QuicConn,
    stream: Deno.QuicBidirectionalStream,
    options: PeerOptions,
  ) {
    this.server = server;
    this.#conn = conn;
    this.#writer = stream.writable.getWriter();
    this.#requestTimeoutMs = options.requestTimeoutMs;
    (async () => {
      const decoder = new FrameDecoder(options.maxFrame);
      try {
        for await (const chunk of stream.readable) {
          for (const frame of decoder.pushOrThrow(chunk)) {
            const doc = decodeDocument(frame);
            const waiter = this.#pending.get(doc.requestID as number);
            if (waiter) {
              this.#pending.delete(doc.requestID as number);
              waiter.resolve(doc as Response);
            }
          }
        }
      } catch {
        // The connection ended.
      }
      this.#fail();
    })();
    conn.closed.then(() => this.#fail(), () => this.#fail());
  }

  /** Whether the session can still be used. */
  get open(): boolean {
    return !this.#closed;
  }

  #fail(): void {
    this.#closed = true;
    for (const [, waiter] of this.#pending) {
      waiter.reject(new Error("the peer closed the connection"));
    }
    this.#pending.clear();
  }

  /** Connect to one server (trying its addresses in turn). */
  static async connect(
    server: ServerAddress,
    options: PeerOptions,
  ): Promise<PeerClient> {
    const addresses = await options.dns.addresses(server.host);
    let lastError: unknown;
    for (const address of addresses) {
      try {
        const conn = await withTimeout(
          Deno.connectQuic<false>({
            hostname: address,
            port: server.port,
            serverName: server.host,
            alpnProtocols: [S2S_ALPN],
            caCerts: options.caCerts.length ? options.caCerts : undefined,
            // A peer that died without closing (SIGKILL, power loss) is
            // noticed within 20 s even on an idle connection.
            maxIdleTimeout: 20_000,
            keepAliveInterval: 5_000,
          }),
          options.connectTimeoutMs,
          `connecting to ${server.host}:${server.port}`,
        );
        const stream = await conn.createBidirectionalStream();
        return new PeerClient(server, conn, stream, options);
      } catch (error) {
        lastError = error;
      }
    }
    throw lastError instanceof Error ? lastError : new Error(String(lastError));
  }

  /**
   * Send a request; resolves with the whole response. `timeoutMs` replaces
   * the client's request timeout for this request.
   */
  request(
    command: string,
    params: Document = {},
    timeoutMs = this.#requestTimeoutMs,
  ): Promise<Response> {
    if (this.#closed) {
      return Promise.reject(new Error("the peer connection is closed"));
    }
    this.lastUsed = Date.now();
    const requestID = this.#nextId++;
    const answer = new Promise<Response>((resolve, reject) =>
      this.#pending.set(requestID, { resolve, reject })
    );
    this.#writer.write(encodeDocument({ ...params, command, requestID })).catch(
      () => this.#fail(),
    );
    return withTimeout(answer, timeoutMs, command).finally(() =>
      this.#pending.delete(requestID)
    );
  }

  /** Send a request; `data` or a {@link ProtocolError} with the peer's code. */
  async call<T = Record<string, unknown>>(
    command: string,
    params: Document = {},
    options: { timeoutFactor?: number } = {},
  ): Promise<T> {
    const response = await this.request(
      command,
      params,
      this.#requestTimeoutMs * (options.timeoutFactor ?? 1),
    );
    if (response.error !== 0) {
      throw new ProtocolError(
        response.error as typeof ErrorCode.INTERNAL,
        response.message ?? `error ${response.error}`,
        response.data,
      );
    }
    return response.data as T;
  }

  /**
   * Authenticate as `host`, speaking for `domain`, towards `destinations`,
   * to the server this client connected to (its name is signed, so the
   * signature is worth nothing to any other server).
   */
  async authenticate(
    keys: ServerKeys,
    claim: Pick<Claim, "host" | "domain" | "destinations">,
  ): Promise<void> {
    const receiver = this.server.host;
    const { challenge } = await this.call<{ challenge: string }>(
      "s2s_hello",
      { receiver },
    );
    const full: Claim = {
      ...claim,
      challenge,
      receiver,
      nonce: toBase64(crypto.getRandomValues(new Uint8Array(32))),
      timestamp: Date.now(),
    };
    await this.call("s2s_auth", {
      ...full,
      signature: await keys.sign(signedText(full)),
    });
    this.authenticatedAt = Date.now();
  }

  /** Close the session. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#conn.close({ closeCode: 0, reason: "done" });
    } catch {
      // Already closed.
    }
    this.#fail();
  }
}

/** Milliseconds an authenticated session is used by default (15 minutes). */
const SESSION_MAX_MS = 15 * 60_000;

/** Milliseconds a server that could not be reached is tried after the others. */
const DOWN_MS = 60_000;

/** Connections to peers, reused per (server, domain, destination), closed when idle. */
export class PeerPool {
  readonly #options: PeerOptions & {
    keys: ServerKeys;
    hostname: string;
    policies?: PolicyStore;
    sessionMaxMs?: number;
  };
  readonly #sessions = new Map<string, Promise<PeerClient>>();
  readonly #down = new Map<string, number>();
  readonly #sweeper: ReturnType<typeof setInterval>;

  /** Create a pool. */
  constructor(
    options: PeerOptions & {
      keys: ServerKeys;
      hostname: string;
      /** Delivery policies: servers outside a destination's policy are not used. */
      policies?: PolicyStore;
      idleMs?: number;
      /** Milliseconds a session is used after it authenticated (then a new one authenticates). */
      sessionMaxMs?: number;
    },
  ) {
    this.#options = options;
    const idle = options.idleMs ?? 30_000;
    this.#sweeper = setInterval(async () => {
      for (const [key, pending] of this.#sessions) {
        const client = await pending.catch(() => undefined);
        if (!client || !client.open || Date.now() - client.lastUsed > idle) {
          client?.close();
          this.#sessions.delete(key);
        }
      }
    }, Math.min(idle, 5000));
  }

  /**
   * An authenticated session with the first reachable server of `destination`
   * for the local `domain`; the servers are tried in their priority order.
   *
   * @throws {ProtocolError} NO_AMTP_RECORD, REMOTE_UNREACHABLE,
   *   POLICY_VIOLATION (temporary) or the peer's refusal
   */
  async session(domain: string, destination: string): Promise<PeerClient> {
    const listed = await this.#options.dns.servers(destination).catch(
      (error) => {
        if (error?.code === "no_record") {
          throw new ProtocolError(
            ErrorCode.NO_AMTP_RECORD,
            (error as Error).message,
          );
        }
        throw new ProtocolError(
          ErrorCode.REMOTE_UNREACHABLE,
          (error as Error).message,
          { transient: true },
        );
      },
    );
    const servers = await this.#permitted(destination, listed);
    const errors: string[] = [];
    // Servers that failed recently go last (still in priority order among themselves).
    const now = Date.now();
    const ordered = [
      ...servers.filter((s) =>
        (this.#down.get(`${s.host}:${s.port}`) ?? 0) <= now
      ),
      ...servers.filter((s) =>
        (this.#down.get(`${s.host}:${s.port}`) ?? 0) > now
      ),
    ];
    for (const server of ordered) {
      const key = `${server.host}:${server.port}|${domain}|${destination}`;
      const existing = await this.#sessions.get(key)?.catch(() => undefined);
      // A session is used for a while, then authenticates afresh (DNS and
      // policies are checked again: a revoked key ends at the latest then).
      if (
        existing?.open &&
        Date.now() - existing.authenticatedAt <
          (this.#options.sessionMaxMs ?? SESSION_MAX_MS)
      ) {
        return existing;
      }
      if (existing) this.forget(existing);
      const attempt = (async () => {
        const client = await PeerClient.connect(server, this.#options);
        try {
          await client.authenticate(this.#options.keys, {
            host: this.#options.hostname,
            domain,
            destinations: [destination],
          });
        } catch (error) {
          client.close();
          throw error;
        }
        return client;
      })();
      this.#sessions.set(key, attempt);
      try {
        return await attempt;
      } catch (error) {
        this.#sessions.delete(key);
        if (error instanceof ProtocolError) throw error; // refused: another server would refuse too
        this.#down.set(`${server.host}:${server.port}`, Date.now() + DOWN_MS);
        errors.push(
          `${server.host}:${server.port}: ${(error as Error).message}`,
        );
      }
    }
    throw new ProtocolError(
      ErrorCode.REMOTE_UNREACHABLE,
      `no server of ${destination} could be reached (${errors.join("; ")})`,
      { transient: true },
    );
  }

  /**
   * The servers DNS lists for a destination that its delivery policy (if
   * any) permits; the others are reported, and used only in `testing` mode.
   *
   * @throws {ProtocolError} POLICY_VIOLATION (temporary) when none is left
   */
  async #permitted(
    destination: string,
    listed: ServerAddress[],
  ): Promise<ServerAddress[]> {
    const policies = this.#options.policies;
    const cached = await policies?.get(destination);
    if (!policies || !cached) return listed;
    const outside = listed.filter((s) => !allowsServer(cached.policy, s));
    for (const s of outside) {
      policies.report(
        destination,
        `DNS lists ${s.host}:${s.port}, which is not in the delivery policy`,
      );
    }
    if (cached.policy.mode === "testing") return listed;
    const inside = listed.filter((s) => allowsServer(cached.policy, s));
    if (inside.length === 0) {
      throw new ProtocolError(
        ErrorCode.POLICY_VIOLATION,
        `every server DNS lists for ${destination} is outside its delivery policy`,
        { transient: true },
      );
    }
    return inside;
  }

  /** Drop a session that failed (the next call connects afresh). */
  forget(client: PeerClient): void {
    client.close();
    for (const [key, pending] of this.#sessions) {
      pending.then((c) => {
        if (c === client && this.#sessions.get(key) === pending) {
          this.#sessions.delete(key);
        }
      }, () => {});
    }
  }

  /** Close every session. */
  async close(): Promise<void> {
    clearInterval(this.#sweeper);
    for (const pending of this.#sessions.values()) {
      (await pending.catch(() => undefined))?.close();
    }
    this.#sessions.clear();
  }
}
