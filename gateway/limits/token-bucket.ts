/**
 * A token bucket: `capacity` tokens, refilled at `perSecond`; each request takes one. It lets a client
 * burst up to the capacity and then holds it to the rate, which is what "N requests per minute" means to
 * most users (GitHub's and Stripe's limits work this way).
 */
export class TokenBucket {
  readonly #capacity: number;
  readonly #perSecond: number;
  #tokens: number;
  #at: number;

  constructor(capacity: number, perSecond: number, now: number) {
    this.#capacity = capacity;
    this.#perSecond = perSecond;
    this.#tokens = capacity;
    this.#at = now;
  }

  /** Takes a token; when there is none, how long until there is one (milliseconds). */
  take(now: number): { allowed: true } | { allowed: false; retryAfterMs: number } {
    this.#tokens = Math.min(this.#capacity, this.#tokens + ((now - this.#at) / 1000) * this.#perSecond);
    this.#at = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return { allowed: true };
    }
    return { allowed: false, retryAfterMs: Math.ceil(((1 - this.#tokens) / this.#perSecond) * 1000) };
  }
}
