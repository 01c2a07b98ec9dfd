/**
 * Frames written to a link one after the other, in order, with the bytes not
 * yet taken by the link bounded: {@link SendQueue.push} tells the producer to
 * wait while more than `maxBytes` are queued, so a producer that waits (the
 * module process's reader in run.ts) is held back by a slow link instead of
 * piling frames up in memory.
 *
 * @module
 */

/** Options of {@link SendQueue}. */
export interface SendQueueOptions {
  /** Bytes queued (written or waiting to be) above which `push` asks to wait. */
  maxBytes: number;
  /** Called once when a write fails; the frames still queued are dropped. */
  onError?: (error: unknown) => void;
}

/** An ordered, bounded queue of frames for one writer. */
export class SendQueue {
  readonly #write: (frame: Uint8Array) => Promise<void>;
  readonly #maxBytes: number;
  readonly #onError?: (error: unknown) => void;
  #tail: Promise<void> = Promise.resolve();
  #queued = 0;
  #failed = false;
  #waiters: (() => void)[] = [];

  /** A queue writing with `write` (which resolves when the frame is taken). */
  constructor(
    write: (frame: Uint8Array) => Promise<void>,
    options: SendQueueOptions,
  ) {
    this.#write = write;
    this.#maxBytes = options.maxBytes;
    this.#onError = options.onError;
  }

  /** Bytes queued: being written or waiting to be. */
  get queued(): number {
    return this.#queued;
  }

  /**
   * Queue `frame` after the others. Returns a promise to wait for when the
   * queue is over its bound (it resolves once the queue is back under it, or
   * the writer failed), else undefined. After a failed write, frames are
   * dropped.
   */
  push(frame: Uint8Array): Promise<void> | undefined {
    if (this.#failed) return undefined;
    this.#queued += frame.length;
    this.#tail = this.#tail.then(async () => {
      try {
        if (!this.#failed) await this.#write(frame);
      } catch (error) {
        this.#fail(error);
      } finally {
        this.#queued -= frame.length;
        if (this.#queued <= this.#maxBytes) this.#wake();
      }
    });
    if (this.#queued <= this.#maxBytes) return undefined;
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  #fail(error: unknown): void {
    if (this.#failed) return;
    this.#failed = true;
    this.#onError?.(error);
    this.#wake();
  }

  #wake(): void {
    const waiters = this.#waiters;
    this.#waiters = [];
    for (const resolve of waiters) resolve();
  }
}
