/**
 * Server-side TLS over a TCP connection this process owns.
 *
 * Why not `Deno.listenTls`: it starts the handshake in a task that owns the
 * socket as soon as the connection is accepted, and closing the connection
 * does not close the socket until that handshake ends (measured with Deno
 * 2.9.6: a peer that never sends a ClientHello keeps its descriptor forever,
 * even after `close()`, so neither a handshake timeout nor a refusal at
 * accept frees anything). Here the TCP connection comes from `Deno.listen`
 * and TLS runs over it with `node:tls` (`TLSSocket` over a stream of the
 * connection): closing ends the socket at once, in any state.
 *
 * Reading runs at most 64 KiB ahead of the reader (then the socket is not
 * read until the reader catches up); each write resolves when its bytes are
 * written to the socket.
 *
 * @module
 */

import { Duplex } from "node:stream";
import { type SecureContext, TLSSocket } from "node:tls";

export { createSecureContext, type SecureContext } from "node:tls";

/** Read buffer of an idle connection, and of a burst (reads that fill it). */
const SMALL_READ = 2 * 1024;
const LARGE_READ = 64 * 1024;
/** Plaintext read ahead of the reader, at most (then reading pauses). */
const MAX_QUEUED = 64 * 1024;

/** A TLS byte stream over one accepted TCP connection. */
export class SecureStream {
  /** Resolves when the TLS handshake is done; rejects when it fails. */
  readonly handshake: Promise<void>;
  /** Resolves once the stream is closed, from either side. */
  readonly closed: Promise<void>;
  readonly #conn: Deno.Conn;
  readonly #socket: TLSSocket;
  readonly #chunks: Uint8Array[] = [];
  #queued = 0;
  #ended = false;
  #isClosed = false;
  #wake?: () => void;
  #resolveClosed!: () => void;

  /** Start the server side of TLS on `conn` with `context`. */
  constructor(conn: Deno.Conn, context: SecureContext) {
    this.#conn = conn;
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
    this.#socket = new TLSSocket(connectionStream(conn), {
      isServer: true,
      secureContext: context,
      ALPNProtocols: ["http/1.1"],
    });
    this.handshake = new Promise((resolve, reject) => {
      this.#socket.once("secure", () => resolve());
      this.#socket.once("error", reject);
      this.closed.then(() => reject(new Error("closed during the handshake")));
    });
    this.handshake.catch(() => {});
    this.#socket.on("data", (chunk: Uint8Array) => {
      this.#chunks.push(chunk);
      this.#queued += chunk.length;
      // Past the bound nothing more is read until the reader catches up:
      // the peer waits on TCP.
      if (this.#queued > MAX_QUEUED) this.#socket.pause();
      this.#wakeReader();
    });
    this.#socket.on("end", () => this.#end());
    this.#socket.on("error", () => this.close());
    this.#socket.on("close", () => this.close());
  }

  /** The next chunk of plaintext, or null at the end. */
  async read(): Promise<Uint8Array | null> {
    while (true) {
      const chunk = this.#chunks.shift();
      if (chunk) {
        this.#queued -= chunk.length;
        return chunk;
      }
      if (this.#ended) return null;
      const woken = new Promise<void>((resolve) => this.#wake = resolve);
      if (this.#socket.isPaused()) this.#socket.resume();
      await woken;
    }
  }

  /** Write all of `bytes`; resolves when they are written to the socket. */
  write(bytes: Uint8Array): Promise<void> {
    if (this.#isClosed) return Promise.reject(new Error("closed"));
    return new Promise((resolve, reject) => {
      this.#socket.write(bytes, (error) => error ? reject(error) : resolve());
    });
  }

  /** Close the TLS stream and the socket at once; safe to call again. */
  close(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    this.#end();
    this.#socket.destroy();
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
    this.#resolveClosed();
  }

  #end(): void {
    this.#ended = true;
    this.#wakeReader();
  }

  #wakeReader(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }
}

/** A Node stream of a Deno connection, for `TLSSocket` to run over. */
function connectionStream(conn: Deno.Conn): Duplex {
  let size = SMALL_READ;
  return new Duplex({
    read() {
      const buffer = new Uint8Array(size);
      conn.read(buffer).then((n) => {
        if (n === null) {
          this.push(null);
          return;
        }
        // Grow while reads fill the buffer (a burst); small again when idle.
        size = n === buffer.length ? LARGE_READ : SMALL_READ;
        this.push(buffer.subarray(0, n));
      }, () => this.push(null));
    },
    write(chunk: Uint8Array, _encoding, callback) {
      writeAll(conn, chunk).then(() => callback(), callback);
    },
    destroy(error, callback) {
      try {
        conn.close();
      } catch {
        // Already closed.
      }
      callback(error);
    },
  });
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await conn.write(bytes.subarray(at));
}
