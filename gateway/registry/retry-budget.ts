/**
 * How many retries the pool may make, so that retries cannot multiply the load on a pool that is already
 * failing (Envoy's retry budget). Over a sliding window, retries may be at most `ratio` of the requests
 * that arrived in it, but always at least `minimum`, so that a quiet pool can still retry the few requests
 * a dead agent took with it. A retry that the budget refuses ends in the error that caused it.
 */
export interface RetryBudgetOptions {
  /** Retries allowed per request arriving in the window. */
  ratio: number;
  /** Retries allowed in any window, whatever the traffic. */
  minimum: number;
  windowMs: number;
}

export const DEFAULT_RETRY_BUDGET: RetryBudgetOptions = { ratio: 0.2, minimum: 10, windowMs: 10_000 };

/** Events are counted in buckets of this many milliseconds, so memory stays bounded whatever the rate. */
const BUCKETS = 10;

export class RetryBudget {
  readonly #options: RetryBudgetOptions;
  readonly #bucketMs: number;
  /** Bucket index (time / bucketMs) → counts; at most BUCKETS + 1 entries. */
  readonly #buckets = new Map<number, { requests: number; retries: number }>();

  constructor(options: RetryBudgetOptions = DEFAULT_RETRY_BUDGET) {
    this.#options = options;
    this.#bucketMs = Math.max(1, options.windowMs / BUCKETS);
  }

  /** A request arrived. */
  request(now: number): void {
    this.#bucket(now).requests += 1;
  }

  /** Takes one retry from the budget; false when the budget is spent (do not retry). */
  tryRetry(now: number): boolean {
    const { requests, retries } = this.#totals(now);
    const allowed = Math.max(this.#options.minimum, Math.floor(requests * this.#options.ratio));
    if (retries >= allowed) return false;
    this.#bucket(now).retries += 1;
    return true;
  }

  #bucket(now: number): { requests: number; retries: number } {
    const index = Math.floor(now / this.#bucketMs);
    let bucket = this.#buckets.get(index);
    if (bucket === undefined) {
      bucket = { requests: 0, retries: 0 };
      this.#buckets.set(index, bucket);
      for (const old of this.#buckets.keys()) if (old <= index - BUCKETS) this.#buckets.delete(old);
    }
    return bucket;
  }

  #totals(now: number): { requests: number; retries: number } {
    const oldest = Math.floor(now / this.#bucketMs) - BUCKETS + 1;
    let requests = 0;
    let retries = 0;
    for (const [index, bucket] of this.#buckets) {
      if (index < oldest) continue;
      requests += bucket.requests;
      retries += bucket.retries;
    }
    return { requests, retries };
  }
}
