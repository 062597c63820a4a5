import { Hono } from "hono";
import { badInput } from "../../shared/errors.ts";
import type { Env } from "../env.ts";
import { CONTENT_TYPE } from "../metrics/exposition.ts";
import { type PoolReport, renderPrometheus } from "../metrics/prometheus.ts";
import { DEFAULT_POOL, isPoolName } from "../pool.ts";
import { poolReport } from "../pool-shards.ts";

/**
 * GET /metrics (admin key or METRICS_TOKEN, checked by the app): Prometheus metrics of the pools named by
 * `?pool=` (repeatable, or comma separated), else of METRICS_POOLS, else of the default pool. Each pool's
 * registry reports its own state and counters; a Worker cannot list Durable Objects, so the pools to
 * scrape are named.
 */
export const metricsRoutes = new Hono<{ Bindings: Env }>();

const MAX_POOLS = 32;

metricsRoutes.get("/metrics", async (c) => {
  const pools = poolsToReport(c.req.queries("pool") ?? [], c.env.METRICS_POOLS);
  const reports: PoolReport[] = await Promise.all(
    pools.map(async (pool) => ({ pool, ...(await poolReport(c.env, pool)) })),
  );
  return c.body(renderPrometheus(reports), 200, {
    "Content-Type": CONTENT_TYPE,
    "Cache-Control": "no-store",
  });
});

export function poolsToReport(asked: readonly string[], configured: string | undefined): string[] {
  const split = (list: readonly string[]) =>
    list
      .flatMap((entry) => entry.split(","))
      .map((name) => name.trim())
      .filter((name) => name !== "");
  const named = split(asked);
  const pools = [...new Set(named.length > 0 ? named : split([configured ?? ""]))];
  if (pools.length === 0) return [DEFAULT_POOL];
  for (const pool of pools) {
    if (!isPoolName(pool)) throw badInput(`invalid pool name ${JSON.stringify(pool.slice(0, 70))}`);
  }
  if (pools.length > MAX_POOLS) throw badInput(`at most ${MAX_POOLS} pools per scrape`);
  return pools;
}
