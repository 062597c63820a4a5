import { DurableObject } from "cloudflare:workers";
import type { ObjectEnv } from "../config.ts";
import { TokenBucket } from "./token-bucket.ts";

export interface RateLimit {
  perMinute: number;
  burst: number;
}

export type RateDecision = { allowed: true } | { allowed: false; retryAfterSeconds: number };

/**
 * One API key's token bucket, as a Durable Object named by the key's SHA-256 (never the key itself), so the
 * limit holds across every Cloudflare location and every pool at once. The bucket lives in memory only:
 * an object evicted after a quiet spell comes back with a full bucket, which a quiet key has earned anyway.
 */
export class RateLimiter extends DurableObject<ObjectEnv> {
  #bucket: TokenBucket | undefined;
  #limit: RateLimit | undefined;

  take(limit: RateLimit): RateDecision {
    const now = Date.now();
    if (
      this.#bucket === undefined ||
      this.#limit?.perMinute !== limit.perMinute ||
      this.#limit.burst !== limit.burst
    ) {
      // First use, or the configuration changed (a deploy): start from a full bucket under the new limit.
      this.#bucket = new TokenBucket(limit.burst, limit.perMinute / 60, now);
      this.#limit = limit;
    }
    const taken = this.#bucket.take(now);
    return taken.allowed
      ? taken
      : { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil(taken.retryAfterMs / 1000)) };
  }
}
