/**
 * A plain (unencrypted) byte stream over one accepted TCP connection, for
 * the web app's loopback listener (`http://localhost`, a secure context for
 * browsers): the same shape as {@link SecureStream}, with nothing to shake
 * hands about. Reading runs at most one chunk ahead of the reader.
 *
 * @module
 */

/** Largest read. */
const READ_SIZE = 64 * 1024;

/** A TCP connection read chunk by chunk and written in whole. */
export class PlainStream {
  /** Resolved at once: there is no handshake. */
  readonly handshake: Promise<void> = Promise.resolve();
  /** Resolves once the stream is closed, from either side. */
  readonly closed: Promise<void>;
  readonly #conn: Deno.Conn;
  #isClosed = false;
  #resolveClosed!: () => void;

  /** Wrap an accepted connection. */
  constructor(conn: Deno.Conn) {
    this.#conn = conn;
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
  }

  /** The next chunk, or null at the end. */
  async read(): Promise<Uint8Array | null> {
    if (this.#isClosed) return null;
    const buffer = new Uint8Array(READ_SIZE);
    const n = await this.#conn.read(buffer).catch(() => null);
    if (n === null) {
      this.close();
      return null;
    }
    return buffer.subarray(0, n);
  }

  /** Write all of `bytes`; resolves when they are written to the socket. */
  async write(bytes: Uint8Array): Promise<void> {
    if (this.#isClosed) throw new Error("closed");
    let at = 0;
    while (at < bytes.length) at += await this.#conn.write(bytes.subarray(at));
  }

  /** Close at once; safe to call again. */
  close(): void {
    if (this.#isClosed) return;
    this.#isClosed = true;
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
    this.#resolveClosed();
  }
}
