import type { MiddlewareHandler } from "hono";
import { SwitchyardError } from "../../shared/errors.ts";
import { bearerToken } from "../auth.ts";
import { gatewayConfig } from "../config.ts";
import type { Env } from "../env.ts";
import { keyDigest } from "../key-digest.ts";
import { log } from "../log.ts";

/**
 * RATE_LIMIT_PER_MINUTE inferences per minute per API key (after authentication, so the key is a valid
 * one): a request over the limit gets 429 with Retry-After before anything else is done for it. Each key's
 * bucket is a RateLimiter Durable Object named by the key's SHA-256. When the limiter cannot be reached,
 * the request goes through: a broken limiter must not take inference down with it.
 */
export function rateLimitPerKey(): MiddlewareHandler<{ Bindings: Env }> {
  return async (c, next) => {
    const config = gatewayConfig(c.env);
    if (config.RATE_LIMIT_PER_MINUTE === 0) return next();
    const perMinute = config.RATE_LIMIT_PER_MINUTE;
    const burst = config.RATE_LIMIT_BURST ?? perMinute;
    const key = await keyDigest(bearerToken(c.req.raw.headers, "client"));
    let decision: Awaited<ReturnType<typeof take>>;
    try {
      decision = await take(c.env, key, perMinute, burst);
    } catch (error) {
      log("rate-limiter-failed", { error: String(error) });
      return next();
    }
    if (!decision.allowed) {
      throw new SwitchyardError(
        "rate_limited",
        `this API key's rate limit of ${perMinute} inferences per minute (bursts of ${burst}) is spent; retry in ${decision.retryAfterSeconds} s`,
        { retryAfterSeconds: decision.retryAfterSeconds },
      );
    }
    return next();
  };
}

function take(env: Env, key: string, perMinute: number, burst: number) {
  return env.RATE_LIMITER.get(env.RATE_LIMITER.idFromName(key)).take({ perMinute, burst });
}
