/**
 * A token bucket, the one rate limiter: requests of a session, deliveries
 * from a peer server, a module's log lines (kept by the SDK inside the
 * module and again by the host).
 *
 * @module
 */

/** `perSecond` tokens a second, at most `burst` saved up. */
export class TokenBucket {
  readonly #perSecond: number;
  readonly #burst: number;
  readonly #now: () => number;
  #tokens: number;
  #last: number;

  /** A full bucket; `now` gives milliseconds (injectable for tests). */
  constructor(
    perSecond: number,
    burst: number,
    now: () => number = () => performance.now(),
  ) {
    this.#perSecond = perSecond;
    this.#burst = burst;
    this.#now = now;
    this.#tokens = burst;
    this.#last = now();
  }

  /**
   * Take `n` tokens, going into debt when there are fewer; answers the
   * milliseconds until the debt is paid (0: none), the wait that paces a
   * flow of bytes to the rate.
   */
  borrow(n: number): number {
    this.take(0);
    this.#tokens -= n;
    return this.#tokens >= 0 ? 0 : -this.#tokens * 1000 / this.#perSecond;
  }

  /** Take `n` tokens if there are that many; false (and none taken) otherwise. */
  take(n = 1): boolean {
    const now = this.#now();
    this.#tokens = Math.min(
      this.#burst,
      this.#tokens + (now - this.#last) * this.#perSecond / 1000,
    );
    this.#last = now;
    if (this.#tokens < n) return false;
    this.#tokens -= n;
    return true;
  }
}
