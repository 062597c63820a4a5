import { createApp } from "./app.ts";
import type { Env } from "./env.ts";

/** The Worker: the Hono app, and the Registry Durable Object class its binding names. */
export { RateLimiter } from "./limits/rate-limiter.ts";
export { Registry } from "./registry/registry.ts";

const app = createApp();

export default {
  fetch: (request, env, ctx) => app.fetch(request, env, ctx),
} satisfies ExportedHandler<Env>;
