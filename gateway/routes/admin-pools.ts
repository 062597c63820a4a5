import { Hono } from "hono";
import { badInput } from "../../shared/errors.ts";
import type { Env } from "../env.ts";
import { isPoolName } from "../pool.ts";
import { everyShard } from "../pool-shards.ts";
import { RESTART_REASON } from "../registry/registry.ts";

/**
 * POST /admin/pools/{pool}/restart (admin key checked by the app): resets the pool's registry, every shard
 * of it, as a crash or a deploy would. Its memory goes and every agent's socket drops; the agents dial back in and re-register,
 * requests in flight are sent again by the Worker, and new ones wait for the agents meanwhile. For fault
 * drills (bench/chaos uses it) and for a registry an operator wants to start afresh.
 */
export const adminPoolRoutes = new Hono<{ Bindings: Env }>();

adminPoolRoutes.post("/admin/pools/:pool/restart", async (c) => {
  const pool = c.req.param("pool");
  if (!isPoolName(pool)) throw badInput("invalid pool name");
  const restarts = everyShard(c.env, pool).map((registry) =>
    registry.restart().catch((error: unknown) => {
      // The reset always surfaces to the caller as an error carrying its reason; anything else is a failure.
      if (!String(error).includes(RESTART_REASON)) throw error;
    }),
  );
  await Promise.all(restarts);
  return c.json({ pool, restarted: true }, 202);
});
