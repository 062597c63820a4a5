import { Hono } from "hono";
import { SwitchyardError } from "../../shared/errors.ts";
import { OIP_EXTENSIONS } from "../../shared/oip/extensions.ts";
import { authenticate } from "../auth.ts";
import type { Env } from "../env.ts";
import { poolOf } from "../pool.ts";
import { poolSnapshot } from "../pool-shards.ts";

/**
 * Server-level OIP v2 endpoints: liveness, readiness (an agent is connected), server metadata. Liveness and
 * readiness take no key by default (app.ts; HEALTH_REQUIRES_KEY turns that off), so a load balancer's probe
 * needs no secret and a client with a wrong key learns of its key at its first real call, not as an outage.
 * They reveal nothing but the answer; a caller with a client key also learns how many agents serve.
 */
export const healthRoutes = new Hono<{ Bindings: Env }>();

export const SERVER_NAME = "switchyard";
export const SERVER_VERSION = "0.1.0";

healthRoutes.get("/v2/health/live", (c) => c.json({ live: true }));

healthRoutes.get("/v2/health/ready", async (c) => {
  const pool = poolOf(c.req.raw);
  const snapshot = await poolSnapshot(c.env, pool);
  const serving = snapshot.agents.filter((agent) => !agent.draining);
  if (serving.length === 0) {
    const why = snapshot.agents.length === 0 ? "no agent is connected" : "every agent is draining";
    throw new SwitchyardError("unavailable", `pool '${pool}' is not ready: ${why}`, { retryAfterSeconds: 1 });
  }
  const identified = await authenticate(c.env, c.req.raw.headers, "client").then(
    () => true,
    () => false,
  );
  return c.json(identified ? { ready: true, agents: serving.length } : { ready: true });
});

healthRoutes.get("/v2", (c) =>
  c.json({ name: SERVER_NAME, version: SERVER_VERSION, extensions: OIP_EXTENSIONS }),
);
