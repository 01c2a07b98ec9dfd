/**
 * A token bucket: `rate` tokens per second, holding at most `burst`.
 *
 * @module
 */

/** Token bucket rate limiter. */
export class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #last: number;

  /** Create a full bucket. */
  constructor(rate: number, burst: number) {
    this.#rate = rate;
    this.#burst = burst;
    this.#tokens = burst;
    this.#last = performance.now();
  }

  /** Take one token; false when the bucket is empty. */
  take(): boolean {
    const now = performance.now();
    this.#tokens = Math.min(
      this.#burst,
      this.#tokens + (now - this.#last) * this.#rate / 1000,
    );
    this.#last = now;
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }
}
