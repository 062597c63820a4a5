import { Hono } from "hono";
import { noRoute, SwitchyardError } from "../shared/errors.ts";
import { errorResponse } from "../shared/http/error-response.ts";
import { sharedMemoryRoutes } from "../shared/oip/shared-memory-routes.ts";
import { authenticate, requireSecret, type SecretKind } from "./auth.ts";
import { gatewayConfig } from "./config.ts";
import type { Env } from "./env.ts";
import { rateLimitPerKey } from "./limits/per-key-rate-limit.ts";
import { log } from "./log.ts";
import { requireObserver } from "./metrics/access.ts";
import { adminModelRoutes } from "./routes/admin-models.ts";
import { adminPolicyRoutes } from "./routes/admin-policies.ts";
import { adminPoolRoutes } from "./routes/admin-pools.ts";
import { agentConnectRoutes } from "./routes/agent-connect.ts";
import { agentModelRoutes } from "./routes/agent-models.ts";
import { dashboardRoutes } from "./routes/dashboard.ts";
import { healthRoutes } from "./routes/health.ts";
import { inferRoutes } from "./routes/infer.ts";
import { metricsRoutes } from "./routes/metrics.ts";
import { modelRoutes } from "./routes/models.ts";
import { queueRoutes } from "./routes/queue.ts";

/**
 * The gateway's HTTP surface. Authentication is declared here, by path, so the whole auth matrix is in one
 * place: /v2 takes client API keys, except health (no key unless HEALTH_REQUIRES_KEY) and model control's
 * load and unload (the admin key); /agent agent tokens, /admin the admin key, /metrics and /dashboard/api
 * the admin key or METRICS_TOKEN.
 */
export function createApp(): Hono<{ Bindings: Env }> {
  const app = new Hono<{ Bindings: Env }>();

  app.onError((error, c) => {
    const failure = SwitchyardError.from(error);
    if (failure.status === 500)
      log("request-failed", { method: c.req.method, path: c.req.path, error: String(error) });
    return errorResponse(failure);
  });
  app.notFound((c) => errorResponse(noRoute(c.req.method, c.req.path)));

  app.use("/v2/*", async (c, next) => {
    const kind = v2Secret(c.req.path, gatewayConfig(c.env).HEALTH_REQUIRES_KEY);
    if (kind !== undefined) await authenticate(c.env, c.req.raw.headers, kind);
    await next();
  });
  app.use("/v2", requireSecret("client"));
  app.use("/agent/*", requireSecret("agent"));
  app.use("/admin/*", requireSecret("admin"));
  // After authentication: a key's inferences per minute (RATE_LIMIT_PER_MINUTE; off by default).
  app.on(
    "POST",
    [
      "/v2/models/:model/infer",
      "/v2/models/:model/versions/:version/infer",
      "/v2/queue/models/:model/infer",
      "/v2/queue/models/:model/versions/:version/infer",
    ],
    rateLimitPerKey(),
  );
  // Read-only operators' views: the admin key or METRICS_TOKEN. The dashboard page itself holds no data
  // and is public; its data API is not (see routes/dashboard.ts).
  app.use("/metrics", requireObserver());
  app.use("/dashboard/api/*", requireObserver());

  app.route("/", healthRoutes);
  app.route("/", inferRoutes);
  app.route("/", queueRoutes);
  app.route("/", modelRoutes);
  // Shared memory needs the client on the agent's host: every call answers as a server that offers none.
  app.route("/", sharedMemoryRoutes(undefined));
  app.route("/", agentConnectRoutes);
  app.route("/", agentModelRoutes);
  // Before adminModelRoutes, whose /admin/models/:model/:version would take "policy" for a version.
  app.route("/", adminPolicyRoutes);
  app.route("/", adminModelRoutes);
  app.route("/", adminPoolRoutes);
  app.route("/", metricsRoutes);
  app.route("/", dashboardRoutes);
  return app;
}

const MODEL_CONTROL = /^\/v2\/repository\/models\/[^/]+\/(load|unload)$/;

/** The secret a /v2 path takes; undefined: none. */
export function v2Secret(path: string, healthRequiresKey: boolean): SecretKind | undefined {
  if (path.startsWith("/v2/health/")) return healthRequiresKey ? "client" : undefined;
  if (MODEL_CONTROL.test(path)) return "admin";
  return "client";
}
