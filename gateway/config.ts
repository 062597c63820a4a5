import { z } from "zod";
import { MAX_FRAME_BYTES } from "../shared/protocol/frames.ts";
import { DEFAULT_ROUTING_POLICY, ROUTING_POLICIES } from "../shared/routing/policies.ts";

/**
 * The gateway's configuration: variables that arrive as strings (wrangler.toml [vars], `--var` with
 * `wrangler dev`), parsed and checked once per isolate.
 */
export interface ConfigVars {
  /** Pools /metrics reports when the scrape names none (comma separated; default "default"). */
  METRICS_POOLS?: string;
  ROUTING_POLICY?: string;
  QUEUE_LIMIT?: string;
  DEFAULT_TIMEOUT_SECONDS?: string;
  MAX_BODY_BYTES?: string;
  MAX_MODEL_BYTES?: string;
  HEARTBEAT_SECONDS?: string;
  AGENT_GRACE_SECONDS?: string;
  MAX_PENDING_BYTES?: string;
  RATE_LIMIT_PER_MINUTE?: string;
  RATE_LIMIT_BURST?: string;
  HEALTH_REQUIRES_KEY?: string;
  REGISTRY_SHARDS?: string;
  QUEUE_ASYNC_LIMIT?: string;
  QUEUE_IN_FLIGHT?: string;
  QUEUE_ASYNC_PRIORITY?: string;
  QUEUE_RESULT_TTL_SECONDS?: string;
  QUEUE_START_TIMEOUT_SECONDS?: string;
}

/** What the Durable Objects see of the Worker's bindings: the configuration and the model bucket. */
export interface ObjectEnv extends ConfigVars {
  MODELS: R2Bucket;
}

/** A request may ask each shard of its pool, and one of them again (shard-walk.ts): this bounds that walk. */
export const MAX_REGISTRY_SHARDS = 64;

const positiveNumber = (fallback: number) => z.coerce.number().positive().default(fallback);
const positiveInteger = (fallback: number) => z.coerce.number().int().positive().default(fallback);

const ConfigSchema = z.object({
  ROUTING_POLICY: z
    .string()
    .refine((name) => name in ROUTING_POLICIES, {
      error: (issue) =>
        `unknown routing policy ${JSON.stringify(issue.input)}; known: ${Object.keys(ROUTING_POLICIES).join(", ")}`,
    })
    .default(DEFAULT_ROUTING_POLICY),
  /** Requests that may wait for a free replica slot, per registry shard; one more gets 429. */
  QUEUE_LIMIT: positiveInteger(1000),
  /**
   * Registry Durable Objects each pool's decisions are spread over (docs/scaling.md): agents join the shard
   * with the fewest, each model asks its home shard first (shared/routing/shard-order.ts). 1 (the default)
   * is one registry per pool. Changing it moves models to new homes; agents reconnecting follow.
   */
  REGISTRY_SHARDS: positiveInteger(1).pipe(z.number().max(MAX_REGISTRY_SHARDS)),
  /** Deadline of a request that names none (seconds). */
  DEFAULT_TIMEOUT_SECONDS: positiveNumber(60),
  /** Largest infer body; above the relay's frame limit nothing could carry it anyway. */
  MAX_BODY_BYTES: positiveInteger(MAX_FRAME_BYTES - 64 * 1024).pipe(z.number().max(MAX_FRAME_BYTES)),
  /** Largest model file an admin may upload (Cloudflare caps request bodies at 100 MB on most plans). */
  MAX_MODEL_BYTES: positiveInteger(100 * 1024 * 1024),
  /** How often agents send "ping"; three missed in a row and the agent is taken for dead. */
  HEARTBEAT_SECONDS: positiveNumber(10),
  /**
   * After a pool's last serving agent left (or its registry restarted), requests wait this long for agents
   * to come back instead of failing at once (cloudflared's grace period); 0 turns waiting off.
   */
  AGENT_GRACE_SECONDS: z.coerce.number().nonnegative().default(30),
  /** Bytes of request bodies one agent's relay holds at once (in flight there); more gets 429. */
  MAX_PENDING_BYTES: positiveInteger(64 * 1024 * 1024),
  /** Inferences per minute per API key (a token bucket); 0 turns rate limiting off. */
  RATE_LIMIT_PER_MINUTE: z.coerce.number().nonnegative().default(0),
  /** The bucket's size: how many may come at once; default: a minute's worth. */
  RATE_LIMIT_BURST: z.coerce.number().positive().optional(),
  /** Managed-queue requests (POST /v2/queue/...) a pool holds waiting to start; one more gets 429. */
  QUEUE_ASYNC_LIMIT: positiveInteger(100_000),
  /**
   * Managed-queue requests of a pool handed to its registry at once: the rest wait in storage. The knob
   * between the two kinds of requests: synchronous ones meet at most this many queued ones in the registry.
   */
  QUEUE_IN_FLIGHT: positiveInteger(16),
  /**
   * Where managed-queue requests stand in a registry's queue: "below" (behind every synchronous request
   * waiting there, as far as the routing policy goes by age; among themselves oldest first) or "equal"
   * (one line, oldest first).
   */
  QUEUE_ASYNC_PRIORITY: z.enum(["below", "equal"]).default("below"),
  /** How long a managed-queue request's result is kept after it finished; then it answers 410. */
  QUEUE_RESULT_TTL_SECONDS: positiveNumber(24 * 60 * 60),
  /** How long a managed-queue request may wait to start when its submit names no X-Request-Timeout. */
  QUEUE_START_TIMEOUT_SECONDS: positiveNumber(24 * 60 * 60),
  /** Whether /v2/health/live and /ready take the client key (by default they take none, as probes need). */
  HEALTH_REQUIRES_KEY: z
    .enum(["true", "false"])
    .default("false")
    .transform((value) => value === "true"),
});

export type GatewayConfig = z.infer<typeof ConfigSchema>;

const cache = new WeakMap<object, GatewayConfig>();

/**
 * The parsed configuration. A bad value is a deployment mistake: it throws with every problem named, so the
 * first request shows it instead of the gateway running on a silent default.
 */
export function gatewayConfig(env: ConfigVars): GatewayConfig {
  const known = cache.get(env);
  if (known !== undefined) return known;
  const raw = {
    ROUTING_POLICY: blankToUndefined(env.ROUTING_POLICY),
    QUEUE_LIMIT: blankToUndefined(env.QUEUE_LIMIT),
    DEFAULT_TIMEOUT_SECONDS: blankToUndefined(env.DEFAULT_TIMEOUT_SECONDS),
    MAX_BODY_BYTES: blankToUndefined(env.MAX_BODY_BYTES),
    MAX_MODEL_BYTES: blankToUndefined(env.MAX_MODEL_BYTES),
    HEARTBEAT_SECONDS: blankToUndefined(env.HEARTBEAT_SECONDS),
    AGENT_GRACE_SECONDS: blankToUndefined(env.AGENT_GRACE_SECONDS),
    MAX_PENDING_BYTES: blankToUndefined(env.MAX_PENDING_BYTES),
    RATE_LIMIT_PER_MINUTE: blankToUndefined(env.RATE_LIMIT_PER_MINUTE),
    RATE_LIMIT_BURST: blankToUndefined(env.RATE_LIMIT_BURST),
    HEALTH_REQUIRES_KEY: blankToUndefined(env.HEALTH_REQUIRES_KEY),
    REGISTRY_SHARDS: blankToUndefined(env.REGISTRY_SHARDS),
    QUEUE_ASYNC_LIMIT: blankToUndefined(env.QUEUE_ASYNC_LIMIT),
    QUEUE_IN_FLIGHT: blankToUndefined(env.QUEUE_IN_FLIGHT),
    QUEUE_ASYNC_PRIORITY: blankToUndefined(env.QUEUE_ASYNC_PRIORITY),
    QUEUE_RESULT_TTL_SECONDS: blankToUndefined(env.QUEUE_RESULT_TTL_SECONDS),
    QUEUE_START_TIMEOUT_SECONDS: blankToUndefined(env.QUEUE_START_TIMEOUT_SECONDS),
  };
  const parsed = ConfigSchema.safeParse(raw);
  if (!parsed.success) {
    throw new Error(
      `gateway configuration is invalid: ${z.prettifyError(parsed.error).replaceAll("\n", " ")}`,
    );
  }
  cache.set(env, parsed.data);
  return parsed.data;
}

function blankToUndefined(value: string | undefined): string | undefined {
  return value === undefined || value.trim() === "" ? undefined : value.trim();
}
