/**
 * The module link's Unix socket: a listener for remote modules on the same
 * host, producing the same {@link Connection}s as the network transports
 * (frames back to back, length checked before buffering, writes that resolve
 * when the bytes are taken, so a module that does not read holds them up).
 *
 * @module
 */

import type { Logger } from "../../core/log/mod.ts";
import { type Connection, newConnectionId } from "../../core/transport/mod.ts";
import { FrameDecoder } from "../../core/wire/mod.ts";
import { LINK_MAX_CONNECTIONS } from "./protocol.ts";

/** One accepted Unix socket connection as a {@link Connection}. */
export class UnixConnection implements Connection {
  readonly id = newConnectionId("ux");
  readonly transport = "unix" as const;
  readonly remoteAddr = "unix";
  readonly closed: Promise<void>;
  readonly #conn: Deno.Conn;
  readonly #maxFrame: number;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  #isClosed = false;
  #resolveClosed!: () => void;

  /** Wrap an accepted connection; frames over `maxFrame` bytes end it. */
  constructor(conn: Deno.Conn, maxFrame: number) {
    this.#conn = conn;
    this.#maxFrame = maxFrame;
    this.#writer = conn.writable.getWriter();
    this.closed = new Promise((resolve) => this.#resolveClosed = resolve);
  }

  async *frames(): AsyncIterable<Uint8Array> {
    const decoder = new FrameDecoder(this.#maxFrame);
    const reader = this.#conn.readable.getReader();
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) return;
        yield* decoder.pushOrThrow(value);
      }
    } catch (error) {
      if (this.#isClosed) return;
      throw error;
    } finally {
      reader.releaseLock();
      this.close();
    }
  }

  async send(frame: Uint8Array): Promise<void> {
    if (this.#isClosed) return;
    try {
      await Promise.race([this.#writer.write(frame), this.closed]);
    } catch {
      this.close();
    }
  }

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

/** A listening Unix socket. */
export interface UnixListener {
  /** Its path. */
  path: string;
  /** Stop accepting and remove the socket file. */
  stop(): void;
}

/**
 * Listen on `path` (a stale socket file there is replaced; the file is made
 * owner-only), handing each connection to `onConnection`; at most
 * {@link LINK_MAX_CONNECTIONS} at once, more are closed at once.
 */
export async function listenUnix(
  path: string,
  options: {
    maxFrame: number;
    onConnection: (conn: Connection) => void;
    log: Logger;
  },
): Promise<UnixListener> {
  try {
    const info = await Deno.lstat(path);
    if (info.isSocket) await Deno.remove(path);
  } catch {
    // Nothing there.
  }
  const listener = Deno.listen({ transport: "unix", path });
  await Deno.chmod(path, 0o600);
  let open = 0;
  let stopped = false;
  (async () => {
    try {
      for await (const conn of listener) {
        if (open >= LINK_MAX_CONNECTIONS) {
          conn.close();
          options.log.warn("connection_refused", {
            transport: "unix",
            reason: "too many module links",
          });
          continue;
        }
        open++;
        const connection = new UnixConnection(conn, options.maxFrame);
        connection.closed.then(() => open--);
        options.onConnection(connection);
      }
    } catch (error) {
      if (!stopped) {
        options.log.warn("listener_ended", {
          transport: "unix",
          error: String(error),
        });
      }
    }
  })();
  return {
    path,
    stop() {
      stopped = true;
      try {
        listener.close();
      } catch {
        // Already closed.
      }
      Deno.remove(path).catch(() => {});
    },
  };
}
