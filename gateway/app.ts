import { Hono } from "hono";
import { SwitchyardError } from "../shared/errors.ts";
import { requireSecret } from "./auth.ts";
import type { Env } from "./env.ts";
import { errorResponse } from "./error-response.ts";
import { rateLimitPerKey } from "./limits/rate-limit.ts";
import { log } from "./log.ts";
import { requireObserver } from "./metrics/access.ts";
import { adminModelRoutes } from "./routes/admin-models.ts";
import { adminPoolRoutes } from "./routes/admin-pools.ts";
import { agentConnectRoutes } from "./routes/agent-connect.ts";
import { agentModelRoutes } from "./routes/agent-models.ts";
import { dashboardRoutes } from "./routes/dashboard.ts";
import { healthRoutes } from "./routes/health.ts";
import { inferRoutes } from "./routes/infer.ts";
import { metricsRoutes } from "./routes/metrics.ts";
import { modelRoutes } from "./routes/models.ts";

/**
 * The gateway's HTTP surface. Authentication is declared here, by path prefix, so the whole auth matrix
 * is in one place: /v2 takes client API keys, /agent agent tokens, /admin the admin key, /metrics and
 * /dashboard/api the admin key or METRICS_TOKEN.
 */
export function createApp(): Hono<{ Bindings: Env }> {
  const app = new Hono<{ Bindings: Env }>();

  app.onError((error, c) => {
    const failure = SwitchyardError.from(error);
    if (failure.status === 500)
      log("request-failed", { method: c.req.method, path: c.req.path, error: String(error) });
    return errorResponse(failure);
  });
  app.notFound((c) => c.json({ error: `no route for ${c.req.method} ${c.req.path}` }, 404));

  app.use("/v2/*", requireSecret("client"));
  app.use("/v2", requireSecret("client"));
  app.use("/agent/*", requireSecret("agent"));
  app.use("/admin/*", requireSecret("admin"));
  // After authentication: a key's inferences per minute (RATE_LIMIT_PER_MINUTE; off by default).
  app.on("POST", ["/v2/models/:model/infer", "/v2/models/:model/versions/:version/infer"], rateLimitPerKey());
  // Read-only operators' views: the admin key or METRICS_TOKEN. The dashboard page itself holds no data
  // and is public; its data API is not (see routes/dashboard.ts).
  app.use("/metrics", requireObserver());
  app.use("/dashboard/api/*", requireObserver());

  app.route("/", healthRoutes);
  app.route("/", inferRoutes);
  app.route("/", modelRoutes);
  app.route("/", agentConnectRoutes);
  app.route("/", agentModelRoutes);
  app.route("/", adminModelRoutes);
  app.route("/", adminPoolRoutes);
  app.route("/", metricsRoutes);
  app.route("/", dashboardRoutes);
  return app;
}
