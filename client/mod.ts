/**
 * The AMTP client library, for Deno and browsers: connect over WebTransport or
 * WebSocket, send requests matched by requestID, receive pushes, keep the
 * session alive and reconnect when it drops.
 *
 * ```ts
 * const client = await AmtpClient.connect({ url: "https://localhost:4433/amtp", certHash });
 * const info = await client.call("info");
 * const key = await keyFromPem(await Deno.readTextFile("alice.key"));
 * const { token } = await client.login("user", "alice@example.org", key);
 * ```
 *
 * From a program outside this repository: docs/CLIENT.md.
 *
 * @module
 */

import {
  decodeDocument,
  type Document,
  encodeDocument,
  type Push,
  type Response,
} from "../core/wire/mod.ts";
import {
  type ClientTransport,
  type OpenOptions,
  openWebSocket,
  openWebTransport,
} from "./transport.ts";
import {
  answerChallenge,
  type LoginChallenge,
  type LoginKey,
} from "../shared/login/answer.ts";
import { normalizeServerName } from "../shared/login/context.ts";
import { importLoginPrivateKey, keyId } from "../shared/login/algorithms.ts";
import { fromPem } from "../shared/pem.ts";
import {
  IdentityError,
  normalizeAddress,
  normalizeAdminName,
} from "../shared/identity.ts";

export type { Document, Push, Response } from "../core/wire/mod.ts";
export type { ClientTransport } from "./transport.ts";
export {
  ChallengeRefused,
  type LoginChallenge,
  type LoginKey,
} from "../shared/login/answer.ts";

/**
 * A login key from the text of a private key file (PEM PKCS#8, PROTOCOL.md
 * §7.8): Ed25519, X25519 or RSA, recognised from the key. Reading the file is
 * the caller's (`Deno.readTextFile`, a browser's file input).
 */
export async function keyFromPem(pem: string): Promise<LoginKey> {
  const loaded = await importLoginPrivateKey(fromPem(pem));
  return {
    algorithm: loaded.algorithm,
    privateKey: loaded.key,
    keyId: await keyId(loaded.publicKey),
  };
}

/** A response with a non-zero `error`, thrown by {@link AmtpClient.call}. */
export class AmtpError extends Error {
  /** The numeric error code. */
  readonly code: number;
  /** The response's `data`, if any. */
  readonly data?: unknown;
  /** The whole response. */
  readonly response: Response;

  /** Wrap an error response. */
  constructor(response: Response) {
    super(response.message ?? `error ${response.error}`);
    this.name = "AmtpError";
    this.code = response.error;
    this.data = response.data;
    this.response = response;
  }
}

/** The connection ended before a response came. */
export class ConnectionClosedError extends Error {
  /** Stable error code. */
  readonly code = "connection_closed";

  /** Create the error. */
  constructor() {
    super("the connection to the server closed");
    this.name = "ConnectionClosedError";
  }
}

/**
 * What happened to a client's connection: `disconnected` (it dropped; with
 * `reconnect` the client is opening it again), `reconnected`, or `closed`
 * for good.
 */
export type ClientState = "disconnected" | "reconnected" | "closed";

/** Options of {@link AmtpClient.connect}. */
export interface ClientOptions extends OpenOptions {
  /** `webtransport` (default for https: URLs) or `websocket`. */
  transport?: "webtransport" | "websocket";
  /** Milliseconds between keep-alive pings (0: none). Default 30 000. */
  keepAliveMs?: number;
  /** Milliseconds before an unanswered request fails. Default 30 000. */
  requestTimeoutMs?: number;
  /** Reconnect with backoff when the connection drops. Default false. */
  reconnect?: boolean;
  /**
   * Milliseconds of failed reconnecting after which the client gives up and
   * closes for good ({@link AmtpClient.closeReason} says why). Default: never.
   */
  reconnectTimeoutMs?: number;
  /**
   * The server's name as the user knows it, when `url` holds an address
   * found some other way (a login is bound to this name). Default: the
   * URL's host.
   */
  serverName?: string;
  /** Open the connection yourself (another runtime's sockets, a test's source address); `url` still names the server. */
  open?: (options: ClientOptions) => Promise<ClientTransport>;
}

interface Pending {
  resolve: (response: Response) => void;
  reject: (error: Error) => void;
  timer: ReturnType<typeof setTimeout>;
}

/** A client session with an AMTP server. */
export class AmtpClient {
  readonly #options: ClientOptions;
  #transport: ClientTransport;
  #nextId = 1;
  readonly #pending = new Map<number, Pending>();
  /** The transfer lane of each transport (itself when it has none). */
  readonly #lanes = new WeakMap<ClientTransport, Promise<ClientTransport>>();
  readonly #pushHandlers = new Set<(push: Push) => void>();
  readonly #strayHandlers = new Set<(response: Response) => void>();
  readonly #stateHandlers = new Set<(state: ClientState) => void>();
  #keepAlive?: ReturnType<typeof setInterval>;
  #closedByUser = false;
  #closeReason?: string;
  #resolveClosed!: () => void;
  /** Resolves when the client is closed for good. */
  readonly closed: Promise<void>;

  private constructor(transport: ClientTransport, options: ClientOptions) {
    this.#transport = transport;
    this.#options = options;
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
    this.#readLoop(transport);
    this.keepAlive(options.keepAliveMs ?? 30_000);
  }

  /**
   * Ping every `everyMs` milliseconds (0: stop): the server closes a session
   * silent for its `idle_timeout`, so ping more often than half of it. A
   * ping unanswered within `everyMs` means the connection is dead: it is
   * dropped (and, with `reconnect`, opened again).
   */
  keepAlive(everyMs: number): void {
    clearInterval(this.#keepAlive);
    this.#keepAlive = undefined;
    if (everyMs <= 0) return;
    this.#keepAlive = setInterval(() => {
      const transport = this.#transport;
      this.request("ping", {}, everyMs).catch((error) => {
        if (!(error instanceof ConnectionClosedError)) transport.close();
      });
    }, everyMs);
  }

  /** Why the client closed for good (undefined while open, or closed by {@link close}). */
  get closeReason(): string | undefined {
    return this.#closeReason;
  }

  /** Connect to a server. */
  static async connect(options: ClientOptions): Promise<AmtpClient> {
    return new AmtpClient(await AmtpClient.#open(options), options);
  }

  static #open(options: ClientOptions): Promise<ClientTransport> {
    if (options.open) return options.open(options);
    const kind = options.transport ??
      (options.url.startsWith("wss:") || options.url.startsWith("ws:")
        ? "websocket"
        : "webtransport");
    return kind === "websocket"
      ? openWebSocket(options)
      : openWebTransport(options);
  }

  async #readLoop(transport: ClientTransport): Promise<void> {
    try {
      for await (const frame of transport.frames()) {
        let doc: Document;
        try {
          doc = decodeDocument(frame);
        } catch {
          continue;
        }
        if (typeof doc.event === "string" && doc.requestID === undefined) {
          for (const handler of this.#pushHandlers) handler(doc as Push);
          continue;
        }
        const id = doc.requestID;
        const pending = typeof id === "number"
          ? this.#pending.get(id)
          : undefined;
        if (pending) {
          this.#pending.delete(id as number);
          clearTimeout(pending.timer);
          pending.resolve(doc as Response);
        } else {
          for (const handler of this.#strayHandlers) handler(doc as Response);
        }
      }
    } catch {
      // Connection broke; handled below.
    }
    if (transport !== this.#transport) return;
    for (const [id, pending] of this.#pending) {
      clearTimeout(pending.timer);
      pending.reject(new ConnectionClosedError());
      this.#pending.delete(id);
    }
    if (!this.#closedByUser && this.#options.reconnect) {
      for (const handler of this.#stateHandlers) handler("disconnected");
      await this.#reconnect();
    } else {
      if (!this.#closedByUser) {
        this.#closeReason = "the server closed the connection";
      }
      this.#finish();
    }
  }

  async #reconnect(): Promise<void> {
    let delay = 250;
    const giveUp = Date.now() +
      (this.#options.reconnectTimeoutMs ?? Number.POSITIVE_INFINITY);
    let last = "the connection closed";
    while (!this.#closedByUser) {
      if (Date.now() + delay > giveUp) {
        this.#closeReason =
          `the connection was lost and could not be opened again: ${last}`;
        this.#finish();
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, delay));
      try {
        this.#transport = await AmtpClient.#open(this.#options);
        this.#readLoop(this.#transport);
        for (const handler of this.#stateHandlers) handler("reconnected");
        return;
      } catch (error) {
        last = error instanceof Error ? error.message : String(error);
        delay = Math.min(delay * 2, 15_000);
      }
    }
  }

  #finish(): void {
    clearInterval(this.#keepAlive);
    for (const handler of this.#stateHandlers) handler("closed");
    this.#resolveClosed();
  }

  /**
   * Send a request; resolves with the whole response, whatever its `error`.
   * Rejects with {@link ConnectionClosedError} when the connection ends
   * first, or after `timeoutMs` (default `requestTimeoutMs`).
   */
  request(
    command: string,
    params: Document = {},
    timeoutMs?: number,
  ): Promise<Response> {
    return this.#send(this.#transport, command, params, timeoutMs);
  }

  /**
   * {@link request} on the transfer lane: over WebTransport a second stream
   * beside the command stream (opened once, reused), so a large upload or
   * download does not hold up other commands and pushes; over WebSocket the
   * one connection.
   */
  async transferRequest(
    command: string,
    params: Document = {},
    timeoutMs?: number,
  ): Promise<Response> {
    const transport = this.#transport;
    let lane = this.#lanes.get(transport);
    if (!lane) {
      lane = transport.lane ? transport.lane() : Promise.resolve(transport);
      this.#lanes.set(transport, lane);
      lane.then((opened) => {
        if (opened !== transport) this.#readLoop(opened);
      }, () => {});
    }
    return this.#send(await lane, command, params, timeoutMs);
  }

  #send(
    transport: ClientTransport,
    command: string,
    params: Document,
    timeoutMs?: number,
  ): Promise<Response> {
    const requestID = this.#nextId++;
    const frame = encodeDocument({ ...params, command, requestID });
    return new Promise<Response>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(requestID);
        reject(new Error(`no response to ${command} in time`));
      }, timeoutMs ?? this.#options.requestTimeoutMs ?? 30_000);
      this.#pending.set(requestID, { resolve, reject, timer });
      transport.send(frame).catch((error) => {
        this.#pending.delete(requestID);
        clearTimeout(timer);
        reject(error);
      });
    });
  }

  /** Send a request; resolves with `data`, or throws {@link AmtpError}. */
  async call<T = Record<string, unknown>>(
    command: string,
    params: Document = {},
  ): Promise<T> {
    const response = await this.request(command, params);
    if (response.error !== 0) throw new AmtpError(response);
    return response.data as T;
  }

  /**
   * The name of the server as this client reached it (the URL's host): what
   * a login is bound to.
   */
  get serverName(): string {
    return normalizeServerName(
      this.#options.serverName ?? new URL(this.#options.url).hostname,
    );
  }

  /**
   * Log in with a private key (PROTOCOL.md §7.2): ask for a challenge bound
   * to {@link serverName}, prove the key, get a token.
   *
   * @throws {AmtpError} from the server (100 to 106, 200)
   * @throws {ChallengeRefused} when the challenge is not one this key should answer
   */
  async login(
    kind: "admin" | "user",
    account: string,
    key: LoginKey,
    options: { label?: string } = {},
  ): Promise<{ token: string; expires: Date }> {
    let normalized = account;
    try {
      normalized = kind === "admin"
        ? normalizeAdminName(account)
        : normalizeAddress(account);
    } catch (error) {
      // The server refuses it with the rule broken.
      if (!(error instanceof IdentityError)) throw error;
    }
    const server = this.serverName;
    const challenge = await this.call<LoginChallenge>(
      `${kind}_login_request`,
      { user: normalized, server, key_id: key.keyId },
    );
    const proof = await answerChallenge(key, challenge, {
      kind,
      account: normalized,
      server,
    });
    const result = await this.call<Record<string, unknown>>(
      `${kind}_login_verify`,
      {
        user: normalized,
        ...proof,
        ...(options.label !== undefined ? { label: options.label } : {}),
      },
    );
    return {
      token: result[`${kind}_token`] as string,
      expires: result.expires as Date,
    };
  }

  /** Send raw bytes (tests of malformed input). */
  sendRaw(bytes: Uint8Array): Promise<void> {
    return this.#transport.send(bytes);
  }

  /** Receive server pushes; returns a function that unsubscribes. */
  onPush(handler: (push: Push) => void): () => void {
    this.#pushHandlers.add(handler);
    return () => this.#pushHandlers.delete(handler);
  }

  /** Receive responses that match no pending request (errors about unreadable frames). */
  onStray(handler: (response: Response) => void): () => void {
    this.#strayHandlers.add(handler);
    return () => this.#strayHandlers.delete(handler);
  }

  /** Be told when the connection dropped, came back, or closed for good. */
  onState(handler: (state: ClientState) => void): () => void {
    this.#stateHandlers.add(handler);
    return () => this.#stateHandlers.delete(handler);
  }

  /** Close the connection for good. */
  close(): void {
    if (this.#closedByUser) return;
    this.#closedByUser = true;
    this.#transport.close();
    this.#finish();
  }
}
