import { errorResponse } from "../shared/http/error-response.ts";
import { createApp } from "./app.ts";
import type { Env } from "./env.ts";
import { log } from "./log.ts";

/** The Worker: the Hono app, and the Durable Object classes its bindings name. */
export { AgentRelay } from "./agent-relay/agent-relay.ts";
export { RateLimiter } from "./limits/rate-limiter.ts";
export { RequestQueue } from "./queue/request-queue.ts";
export { Registry } from "./registry/registry.ts";

const app = createApp();

export default {
  // Hono answers every failure of a route; this catches what escapes it (a body stream that breaks after
  // the route returned, say), so no response is ever the runtime's own error page with a stack trace.
  async fetch(request, env, ctx) {
    try {
      return await app.fetch(request, env, ctx);
    } catch (error) {
      log("request-failed", { method: request.method, error: String(error) });
      return errorResponse(error);
    }
  },
} satisfies ExportedHandler<Env>;
