/**
 * Framing: a frame is one BSON document, and a BSON document starts with its
 * own total length as a little-endian int32. Frames therefore travel back to
 * back on a byte stream with no other delimiter.
 *
 * {@link FrameDecoder} turns arbitrary chunks (split or coalesced) into whole
 * frames, checking the length prefix against the limit before a single byte of
 * the frame body is buffered. Free of Deno-only APIs: the client library uses
 * it in browsers too.
 *
 * @module
 */

/** Smallest possible BSON document: int32 length + terminating zero byte. */
export const MIN_FRAME = 5;

/** A frame that cannot be accepted; the byte stream cannot be resynchronised. */
export class FrameError extends Error {
  /** `frame_too_large` or `frame_malformed`. */
  readonly code: "frame_too_large" | "frame_malformed";
  /** The length the peer announced, when known. */
  readonly announced?: number;

  /** Create a frame error. */
  constructor(
    code: "frame_too_large" | "frame_malformed",
    message: string,
    announced?: number,
  ) {
    super(message);
    this.name = "FrameError";
    this.code = code;
    this.announced = announced;
  }
}

/** Read the little-endian int32 length prefix at `offset` of `bytes`. */
export function readLength(bytes: Uint8Array, offset = 0): number {
  return (bytes[offset] | (bytes[offset + 1] << 8) |
    (bytes[offset + 2] << 16) | (bytes[offset + 3] << 24));
}

/**
 * Check a frame's announced length against the limit.
 *
 * @throws {FrameError} when it is below the BSON minimum or above `maxFrame`
 */
export function checkLength(length: number, maxFrame: number): void {
  if (length < MIN_FRAME) {
    throw new FrameError(
      "frame_malformed",
      `frame length ${length} is below the BSON minimum of ${MIN_FRAME}`,
      length,
    );
  }
  if (length > maxFrame) {
    throw new FrameError(
      "frame_too_large",
      `frame of ${length} bytes exceeds the limit of ${maxFrame}`,
      length,
    );
  }
}

/**
 * Incremental decoder of back-to-back frames.
 *
 * Memory held is at most one partial frame (bounded by the limit) plus the
 * current chunk.
 */
export class FrameDecoder {
  readonly #maxFrame: number;
  #chunks: Uint8Array[] = [];
  #buffered = 0;
  #need = -1;
  #error?: FrameError;

  /** Create a decoder that refuses frames larger than `maxFrame` bytes. */
  constructor(maxFrame: number) {
    this.#maxFrame = maxFrame;
  }

  /** Bytes held for an incomplete frame. */
  get buffered(): number {
    return this.#buffered;
  }

  /**
   * The error that stopped the decoder: a length outside the limits. The
   * stream cannot be resynchronised after it; check it after each push.
   */
  get error(): FrameError | undefined {
    return this.#error;
  }

  /**
   * Feed a chunk; return every frame it completes, in order — including the
   * frames before a bad length prefix in the same chunk (answer those, then
   * report {@link error}).
   */
  push(chunk: Uint8Array): Uint8Array[] {
    const frames: Uint8Array[] = [];
    if (this.#error) return frames;
    try {
      this.#decode(chunk, frames);
    } catch (error) {
      if (!(error instanceof FrameError)) throw error;
      this.#error = error;
    }
    return frames;
  }

  /**
   * Like {@link push}, but throws the error when the chunk breaks the
   * framing (after handing over nothing): for callers without a per-frame
   * answer.
   *
   * @throws {FrameError}
   */
  pushOrThrow(chunk: Uint8Array): Uint8Array[] {
    const frames = this.push(chunk);
    if (this.#error) throw this.#error;
    return frames;
  }

  #decode(chunk: Uint8Array, frames: Uint8Array[]): void {
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#buffered === 0) {
        // Fast path: whole frames straight out of the chunk, no copy.
        if (chunk.length - offset >= 4) {
          const length = readLength(chunk, offset);
          this.#check(length);
          if (chunk.length - offset >= length) {
            frames.push(chunk.subarray(offset, offset + length));
            offset += length;
            continue;
          }
          this.#need = length;
        }
        const rest = chunk.subarray(offset);
        this.#chunks.push(rest);
        this.#buffered = rest.length;
        break;
      }
      if (this.#need < 0) {
        // Fewer than four bytes held: take just enough to learn the length.
        const take = Math.min(4 - this.#buffered, chunk.length - offset);
        this.#chunks.push(chunk.subarray(offset, offset + take));
        this.#buffered += take;
        offset += take;
        if (this.#buffered < 4) break;
        const head = concat(this.#chunks, 4);
        this.#chunks = [head];
        this.#need = readLength(head);
        this.#check(this.#need);
        continue;
      }
      const take = Math.min(this.#need - this.#buffered, chunk.length - offset);
      this.#chunks.push(chunk.subarray(offset, offset + take));
      this.#buffered += take;
      offset += take;
      if (this.#buffered === this.#need) {
        frames.push(concat(this.#chunks, this.#need));
        this.#chunks = [];
        this.#buffered = 0;
        this.#need = -1;
      }
    }
  }

  #check(length: number): void {
    try {
      checkLength(length, this.#maxFrame);
    } catch (error) {
      this.#chunks = [];
      this.#buffered = 0;
      throw error;
    }
  }
}

function concat(chunks: Uint8Array[], length: number): Uint8Array {
  if (chunks.length === 1 && chunks[0].length === length) {
    // Copy: the chunk may be a view into a buffer the transport reuses.
    return chunks[0].slice();
  }
  const out = new Uint8Array(length);
  let at = 0;
  for (const chunk of chunks) {
    out.set(chunk, at);
    at += chunk.length;
  }
  return out;
}
