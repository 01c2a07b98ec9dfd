/**
 * WebTransport over HTTP/3 (QUIC, UDP). A session is carried on the first
 * bidirectional stream the client opens, frames back to back (Deno cannot yet
 * close a stream cleanly, so one long-lived stream is the design).
 *
 * @module
 */

import { concatBytes, FrameDecoder, S2S_ALPN } from "../wire/mod.ts";
import {
  type Connection,
  type Listener,
  type ListenerOptions,
  newConnectionId,
  type Transport,
} from "./connection.ts";

/** WebTransport (and server-to-server AMTP) over QUIC on the UDP port. */
export const webTransport: Transport = {
  name: "webtransport",
  protocol: "udp",
  listen: listenWebTransport,
};

/** Start the QUIC endpoint and accept WebTransport sessions at `/amtp`. */
export function listenWebTransport(options: ListenerOptions): Listener {
  const endpoint = new Deno.QuicEndpoint({
    hostname: options.hostname,
    port: options.port,
  });
  let listener = startListening(endpoint, options, options.cert, options.key);
  return {
    port: endpoint.addr.port,
    setCertificate(cert, key) {
      // Stop first, then listen: in Deno 2.9 a second listen() on a live
      // endpoint is ignored while the first listener runs (measured).
      listener.stop();
      listener = startListening(endpoint, options, cert, key);
    },
    stop() {
      listener.stop();
    },
    close() {
      listener.stop();
      endpoint.close();
    },
  };
}

function startListening(
  endpoint: Deno.QuicEndpoint,
  options: ListenerOptions,
  cert: string,
  key: string,
): Deno.QuicListener {
  const listener = endpoint.listen({
    cert,
    key,
    alpnProtocols: options.onPeerConnection ? ["h3", S2S_ALPN] : ["h3"],
    keepAliveInterval: 15_000,
    maxIdleTimeout: 60_000,
  });
  (async () => {
    try {
      for await (const incoming of listener) {
        // Accept at once, before touching any property of `incoming`:
        // in Deno 2.9 reading QuicIncoming.remoteAddr invalidates the
        // resource ("Invalid QuicIncoming resource"). The address is read
        // from the accepted connection instead. Not awaited here: a slow
        // handshake must not hold up the next one.
        handleIncoming((async () => await incoming.accept())(), options);
      }
    } catch (error) {
      options.log.debug("listener_ended", { error: String(error) });
    }
  })();
  return listener;
}

/** The session was not established within the handshake timeout. */
class HandshakeTimeout extends Error {
  /** Stable error code. */
  readonly code = "handshake_timeout";

  constructor() {
    super("session not established within the handshake timeout");
    this.name = "HandshakeTimeout";
  }
}

/**
 * One incoming QUIC connection: handshake, admission, then a session (or a
 * peer session), all within the handshake timeout. A connection that misses
 * it is closed and its place released.
 */
async function handleIncoming(
  accepting: Promise<Deno.QuicConn>,
  options: ListenerOptions,
): Promise<void> {
  const abort = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const passed = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      abort.abort();
      reject(new HandshakeTimeout());
    }, options.handshakeTimeoutMs);
  });
  passed.catch(() => {});
  let conn: Deno.QuicConn;
  try {
    conn = await Promise.race([accepting, passed]);
  } catch (error) {
    clearTimeout(timer);
    // A handshake finishing after the deadline is closed at once.
    accepting.then((late) => late.close({ closeCode: 0, reason: "timeout" }))
      .catch(() => {});
    options.log.debug("handshake_failed", {
      transport: "webtransport",
      error: String(error),
    });
    return;
  }
  const ip = conn.remoteAddr.hostname;
  if (!options.admission.admit(ip)) {
    clearTimeout(timer);
    options.log.warn("connection_refused", {
      transport: "webtransport",
      ip,
      reason: "too many sessions",
    });
    conn.close({ closeCode: 11, reason: "too many sessions" });
    return;
  }
  const peer = conn.protocol === S2S_ALPN && options.onPeerConnection;
  try {
    const connection = await Promise.race([
      peer
        ? establishPeer(conn, ip, options, abort.signal)
        : establish(conn, ip, options, abort.signal),
      passed,
    ]);
    clearTimeout(timer);
    connection.closed.then(() => options.admission.release(ip));
    if (peer) options.onPeerConnection!(connection);
    else options.onConnection(connection);
  } catch (error) {
    clearTimeout(timer);
    abort.abort();
    try {
      conn.close({
        closeCode: 0,
        reason: error instanceof HandshakeTimeout
          ? "handshake timeout"
          : "no session",
      });
    } catch {
      // Already closed.
    }
    options.admission.release(ip);
    options.log.debug(peer ? "peer_handshake_failed" : "handshake_failed", {
      transport: "webtransport",
      ip,
      error: String(error),
    });
  }
}

/** The WebTransport session and its first stream. */
async function establish(
  conn: Deno.QuicConn,
  ip: string,
  options: ListenerOptions,
  signal: AbortSignal,
): Promise<StreamConnection> {
  const wt = await Deno.upgradeWebTransport(conn);
  signal.throwIfAborted();
  await wt.ready;
  signal.throwIfAborted();
  const streams = wt.incomingBidirectionalStreams.getReader();
  const first = await streams.read();
  if (first.done) throw new Error("client opened no stream");
  if (signal.aborted) {
    wt.close({ closeCode: 0, reason: "handshake timeout" });
    throw new HandshakeTimeout();
  }
  // The second stream is the transfer lane (docs/PROTOCOL.md section 2.3);
  // later streams are not part of the protocol: their data is refused.
  let openLane!: (lane: Connection) => void;
  const lane = new Promise<Connection>((resolve) => openLane = resolve);
  (async () => {
    let opened = false;
    while (true) {
      const next = await streams.read().catch(() => ({ done: true as const }));
      if (next.done) break;
      if (opened) {
        next.value.readable.cancel().catch(() => {});
        continue;
      }
      opened = true;
      openLane(
        new StreamConnection(wt, next.value, {
          remoteAddr: ip,
          maxFrame: options.maxFrame,
        }),
      );
    }
  })();
  return new StreamConnection(wt, first.value, {
    remoteAddr: ip,
    maxFrame: options.maxFrame,
    lane,
  });
}

/** The first stream of a server-to-server connection. */
async function establishPeer(
  conn: Deno.QuicConn,
  ip: string,
  options: ListenerOptions,
  signal: AbortSignal,
): Promise<StreamConnection> {
  const streams = conn.incomingBidirectionalStreams.getReader();
  const first = await streams.read();
  if (first.done) throw new Error("peer opened no stream");
  signal.throwIfAborted();
  return new StreamConnection(
    {
      close: (info) =>
        conn.close({
          closeCode: info?.closeCode ?? 0,
          reason: info?.reason ?? "",
        }),
      closed: conn.closed,
    },
    first.value,
    { remoteAddr: ip, maxFrame: options.maxFrame, transport: "peer" },
  );
}

/** A QUIC connection or WebTransport session carrying one stream. */
interface StreamOwner {
  close(info?: { closeCode?: number; reason?: string }): void;
  closed: Promise<unknown>;
}

/** One long-lived bidirectional stream of frames, over WebTransport or raw QUIC. */
export class StreamConnection implements Connection {
  readonly id: string;
  readonly transport: "webtransport" | "peer";
  readonly remoteAddr: string;
  readonly closed: Promise<void>;
  readonly lane?: Promise<Connection>;
  readonly #wt: StreamOwner;
  readonly #stream: {
    readable: ReadableStream<Uint8Array>;
    writable: WritableStream<Uint8Array>;
  };
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #maxFrame: number;
  #isClosed = false;
  #resolveClosed!: () => void;
  /** Frames waiting for this turn's write, and the promise of that write. */
  #pending: Uint8Array[] = [];
  #flushed: Promise<void> = Promise.resolve();

  constructor(
    wt: StreamOwner,
    stream: {
      readable: ReadableStream<Uint8Array>;
      writable: WritableStream<Uint8Array>;
    },
    options: {
      /** The peer's IP address. */
      remoteAddr: string;
      /** Frame limit in bytes. */
      maxFrame: number;
      /** `peer`: another server over raw QUIC. */
      transport?: "webtransport" | "peer";
      /** The transfer lane, once the client opens it. */
      lane?: Promise<Connection>;
    },
  ) {
    this.lane = options.lane;
    const transport = options.transport ?? "webtransport";
    this.transport = transport;
    this.id = newConnectionId(transport === "peer" ? "s2s" : "wt");
    this.#wt = wt;
    this.#stream = stream;
    this.#writer = stream.writable.getWriter();
    this.remoteAddr = options.remoteAddr;
    this.#maxFrame = options.maxFrame;
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
    wt.closed.then(() => this.#markClosed(), () => this.#markClosed());
  }

  async *frames(): AsyncIterable<Uint8Array> {
    const decoder = new FrameDecoder(this.#maxFrame);
    const reader = this.#stream.readable.getReader();
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) return;
        for (const frame of decoder.push(value)) yield frame;
        if (decoder.error) throw decoder.error;
      }
    } catch (error) {
      if (this.#isClosed) return;
      throw error;
    } finally {
      reader.releaseLock();
    }
  }

  /**
   * Send one frame. Frames sent in the same turn of the event loop go out in
   * one stream write (a pipelined burst of responses costs one write, not
   * one each); each caller's promise settles when its write is done (the
   * stream's flow control holds it while the peer does not read), or when
   * the connection closes.
   */
  send(frame: Uint8Array): Promise<void> {
    if (this.#isClosed) return Promise.resolve();
    if (this.#pending.length === 0) {
      const flushed = new Promise<void>((resolve) =>
        queueMicrotask(() => resolve(this.#flush()))
      );
      this.#flushed = Promise.race([flushed, this.closed]);
    }
    this.#pending.push(frame);
    return this.#flushed;
  }

  async #flush(): Promise<void> {
    const frames = this.#pending;
    this.#pending = [];
    const bytes = frames.length === 1 ? frames[0] : concatBytes(...frames);
    try {
      await this.#writer.write(bytes);
    } catch {
      this.close();
    }
  }

  close(reason = "closed"): void {
    if (this.#isClosed) return;
    try {
      this.#wt.close({ closeCode: 0, reason: reason.slice(0, 100) });
    } catch {
      // Already gone.
    }
    this.#markClosed();
  }

  #markClosed(): void {
    if (this.#isClosed) {
      return;
    }
    this.#isClosed = true;
    this.#resolveClosed();
  }
}
