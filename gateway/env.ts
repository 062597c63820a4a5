import type { AgentRelay } from "./agent-relay/agent-relay.ts";
import type { ConfigVars } from "./config.ts";
import type { RateLimiter } from "./limits/rate-limiter.ts";
import type { QueueCalls } from "./object-bindings.ts";
import type { Registry } from "./registry/registry.ts";

/**
 * The Worker's bindings: its Durable Objects and R2 bucket, its secrets (`wrangler secret put` in production,
 * .dev.vars or the environment under `wrangler dev`), and its configuration variables (config.ts). The
 * Durable Objects themselves see ObjectEnv (config.ts), which names neither of them, so that no object
 * imports the Worker's bindings and the Worker's bindings may import the objects.
 */
export interface Env extends ConfigVars {
  REGISTRY: DurableObjectNamespace<Registry>;
  /** One relay per connected agent, named by its agent's data channel (object-bindings.ts). */
  AGENT_RELAY: DurableObjectNamespace<AgentRelay>;
  /** One token bucket per API key (RATE_LIMIT_PER_MINUTE). */
  RATE_LIMITER: DurableObjectNamespace<RateLimiter>;
  /** One managed queue per pool (queue/request-queue.ts). */
  REQUEST_QUEUE: DurableObjectNamespace<QueueCalls>;
  MODELS: R2Bucket;
  /** Managed-queue bodies and results too large for the queue's own storage. */
  QUEUE_STORE: R2Bucket;
  /** Client API keys, comma separated. */
  API_KEYS?: string;
  /** Tokens agents connect with, comma separated. */
  AGENT_TOKENS?: string;
  /** The admin key (model uploads). */
  ADMIN_KEY?: string;
  /** Signs managed-queue webhooks (HMAC-SHA256); webhooks are refused while it is unset. */
  WEBHOOK_SECRET?: string;
  /** A read-only token for /metrics and the dashboard (the admin key works there too). */
  METRICS_TOKEN?: string;
}
