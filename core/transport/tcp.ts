/**
 * The TCP port: TLS, then one HTTP/1.1 request, which is either a WebSocket
 * upgrade at `/amtp` (the connection becomes a session) or a plain HTTPS
 * request for the `httpHandler` hook (answered, then closed).
 *
 * Before any of it costs more than a descriptor, an accepted connection is
 * counted per IP and in total (the shared {@link Admission}) and against the
 * descriptor budget; over either it is closed at once. TLS and the request
 * head must arrive within the handshake timeout. The accept loop survives
 * running out of descriptors.
 *
 * @module
 */

import type { Logger } from "../log/mod.ts";
import type { Listener, ListenerOptions, Transport } from "./connection.ts";
import {
  HttpError,
  readBody,
  readHead,
  type RequestHead,
  textResponse,
  toRequest,
  writeResponse,
} from "./http.ts";
import {
  createSecureContext,
  type SecureContext,
  SecureStream,
} from "./secure.ts";
import { isUpgrade, upgradeAnswer, WebSocketConnection } from "./websocket.ts";
import { PlainStream } from "./plain.ts";

/** Pause of the accept loop after a failed accept (out of descriptors). */
const ACCEPT_BACKOFF_MS = 50;

/** WebSocket (and plain HTTPS) over TLS on the TCP port. */
export const websocketOverTcp: Transport = {
  name: "websocket",
  protocol: "tcp",
  listen: (options) => listenTcp(options),
};

/** A connection being served: TLS, or plain on the loopback listener. */
type AcceptedStream = SecureStream | PlainStream;

/** What differs for the web app's loopback listener (plain HTTP). */
export interface TcpOptions {
  /** TLS (default), or plain HTTP (loopback only: browsers count it as secure). */
  secure?: boolean;
  /** Whether an upgrade at `/amtp` may go on (Host and Origin checks); else 403. */
  upgradeAllowed?: (head: RequestHead) => boolean;
}

/** Start the TLS listener on the TCP port (or a plain one, for the web app on loopback). */
export function listenTcp(
  options: ListenerOptions,
  tcp: TcpOptions = {},
): Listener {
  const state = new ListenerState(options, tcp);
  const listener = Deno.listen({
    hostname: options.hostname,
    port: options.port,
    transport: "tcp",
  });
  state.acceptLoop(listener);
  return {
    port: listener.addr.port,
    setCertificate(cert, key) {
      // New connections get the new certificate; live ones keep theirs.
      if (state.context) state.context = createSecureContext({ cert, key });
    },
    stop() {
      state.stop(listener);
    },
    close() {
      // Nothing more: live WebSocket sessions end with their sessions.
    },
  };
}

/** Logs a kind of refusal at most once a second, with how many there were. */
class RefusalLog {
  readonly #log: Logger;
  readonly #last = new Map<string, { at: number; count: number }>();

  constructor(log: Logger) {
    this.#log = log;
  }

  note(reason: string, fields: Record<string, string | number>): void {
    const now = performance.now();
    const entry = this.#last.get(reason) ?? { at: -Infinity, count: 0 };
    entry.count++;
    this.#last.set(reason, entry);
    if (now - entry.at < 1000) return;
    this.#log.warn("connection_refused", {
      transport: "tcp",
      reason,
      ...fields,
      refused: entry.count,
    });
    entry.at = now;
    entry.count = 0;
  }
}

/** The listener's counts, certificate and connections in their handshake. */
class ListenerState {
  /** TLS settings (certificate) for new connections (none for plain HTTP). */
  context?: SecureContext;
  readonly #options: ListenerOptions;
  readonly #tcp: TcpOptions;
  readonly #refusals: RefusalLog;
  /** Connections before their session or answer (closed on stop). */
  readonly #handshakes = new Set<AcceptedStream>();
  #open = 0;
  #stopped = false;

  constructor(options: ListenerOptions, tcp: TcpOptions) {
    this.#options = options;
    this.#tcp = tcp;
    this.#refusals = new RefusalLog(options.log);
    if (tcp.secure !== false) {
      this.context = createSecureContext({
        cert: options.cert,
        key: options.key,
      });
    }
  }

  stop(listener: Deno.Listener): void {
    this.#stopped = true;
    try {
      listener.close();
    } catch {
      // Already closed.
    }
    for (const stream of this.#handshakes) stream.close();
  }

  async acceptLoop(listener: Deno.Listener): Promise<void> {
    while (!this.#stopped) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
      } catch (error) {
        if (this.#stopped) return;
        // Out of descriptors (EMFILE, ENFILE) or a connection reset before
        // it was accepted: never fatal; pause briefly and go on.
        this.#refusals.note("accept failed", { error: String(error) });
        await new Promise((resolve) => setTimeout(resolve, ACCEPT_BACKOFF_MS));
        continue;
      }
      this.#admit(conn);
    }
  }

  #admit(conn: Deno.Conn): void {
    const ip = (conn.remoteAddr as Deno.NetAddr).hostname;
    if (this.#open >= this.#options.maxConnections) {
      closeQuietly(conn);
      this.#refusals.note("descriptor limit", {
        open: this.#open,
        max: this.#options.maxConnections,
      });
      return;
    }
    if (!this.#options.admission.admit(ip)) {
      closeQuietly(conn);
      this.#refusals.note("too many sessions", { ip });
      return;
    }
    this.#open++;
    // Small frames (a command's answer, a push) go out at once, not held by
    // Nagle's algorithm behind a large frame's unacknowledged bytes until the
    // peer's delayed ACK (tens of milliseconds).
    (conn as Deno.TcpConn).setNoDelay(true);
    const stream = this.context
      ? new SecureStream(conn, this.context)
      : new PlainStream(conn);
    this.#handshakes.add(stream);
    this.#serve(stream, ip).catch((error) => {
      this.#options.log.debug("connection_error", { ip, error: String(error) });
    }).finally(() => {
      this.#handshakes.delete(stream);
      stream.close();
      this.#open--;
      this.#options.admission.release(ip);
    });
  }

  /** TLS, one request head, then a session or one answer. */
  async #serve(conn: AcceptedStream, ip: string): Promise<void> {
    const options = this.#options;
    const deadline = new Deadline(options.handshakeTimeoutMs);
    let tlsDone = false;
    try {
      await deadline.race(conn.handshake);
      tlsDone = true;
      const read = await deadline.race(readHead(conn));
      if (!read) return;
      const { head, rest } = read;
      const path = head.target.split("?")[0];
      if (path === "/amtp" && isUpgrade(head)) {
        if (this.#tcp.upgradeAllowed && !this.#tcp.upgradeAllowed(head)) {
          throw new HttpError(403, "upgrade refused from this origin");
        }
        const answer = new TextEncoder().encode(upgradeAnswer(head));
        await deadline.race(conn.write(answer));
        deadline.clear();
        this.#handshakes.delete(conn);
        const session = new WebSocketConnection(conn, {
          ip,
          maxFrame: options.maxFrame,
          early: rest,
        });
        options.onConnection(session);
        await session.closed;
        return;
      }
      const body = await deadline.race(readBody(conn, head, rest));
      deadline.clear();
      let response: Response;
      if (options.httpHandler) {
        try {
          response = await options.httpHandler(
            toRequest(head, body, options.hostname),
          );
        } catch (error) {
          if (error instanceof HttpError) throw error;
          options.log.error("http_handler_failed", { error: String(error) });
          response = textResponse(500, "internal error");
        }
      } else {
        response = textResponse(404, "not found");
      }
      await within(
        options.handshakeTimeoutMs,
        writeResponse(conn, response, head),
      );
    } catch (error) {
      if (!tlsDone) {
        options.log.debug("tls_failed", {
          ip,
          error: deadline.expired ? "handshake timeout" : String(error),
        });
        return;
      }
      const answer = deadline.expired
        ? textResponse(408, "request timeout")
        : error instanceof HttpError
        ? textResponse(
          error.status,
          error.message,
          error.status === 426 ? { "sec-websocket-version": "13" } : {},
        )
        : undefined;
      options.log.debug("http_refused", {
        ip,
        reason: deadline.expired ? "request head timeout" : String(error),
      });
      if (answer) {
        // Best effort: a peer that does not read gets no more time.
        await within(1000, writeResponse(conn, answer, { method: "GET" }))
          .catch(() => {});
      }
    } finally {
      deadline.clear();
    }
  }
}

/** One deadline for several steps; rejects the step in progress when it passes. */
class Deadline {
  #timer?: ReturnType<typeof setTimeout>;
  #expired = false;
  readonly #passed: Promise<never>;

  constructor(ms: number) {
    this.#passed = new Promise<never>((_, reject) => {
      this.#timer = setTimeout(() => {
        this.#expired = true;
        reject(new Error("deadline passed"));
      }, ms);
    });
    this.#passed.catch(() => {});
  }

  get expired(): boolean {
    return this.#expired;
  }

  race<T>(step: Promise<T>): Promise<T> {
    return Promise.race([step, this.#passed]);
  }

  clear(): void {
    clearTimeout(this.#timer);
  }
}

/** `step`, or a rejection when it takes longer than `ms`. */
async function within<T>(ms: number, step: Promise<T>): Promise<T> {
  const deadline = new Deadline(ms);
  try {
    return await deadline.race(step);
  } finally {
    deadline.clear();
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
