import { Hono } from "hono";
import { notFound } from "../../shared/errors.ts";
import { DASHBOARD_ASSETS, DASHBOARD_PAGE } from "../dashboard/assets.ts";
import { dashboardView } from "../dashboard/view.ts";
import type { Env } from "../env.ts";
import { poolOf } from "../pool.ts";
import { poolReport } from "../pool-shards.ts";

/**
 * The dashboard. A browser cannot send a bearer header when it navigates, so the page and its scripts carry
 * no data and need no key; the page asks for the admin key (or METRICS_TOKEN), keeps it in the tab's
 * sessionStorage, and polls GET /dashboard/api/pool with it as a bearer header (checked by the app). No
 * cookie means no ambient credential, so no cross-site request can read or act with it; the strict
 * Content-Security-Policy lets only the gateway's own scripts run on the page that holds the key.
 */
export const dashboardRoutes = new Hono<{ Bindings: Env }>();

const SECURITY_HEADERS = {
  "Content-Security-Policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
  "X-Content-Type-Options": "nosniff",
  "Referrer-Policy": "no-referrer",
};

dashboardRoutes.get("/dashboard", (c) =>
  c.body(DASHBOARD_PAGE.body, 200, {
    ...SECURITY_HEADERS,
    "Content-Type": DASHBOARD_PAGE.type,
    "Cache-Control": DASHBOARD_PAGE.cache,
  }),
);

dashboardRoutes.get("/dashboard/assets/:name", (c) => {
  const asset = DASHBOARD_ASSETS[c.req.param("name")];
  if (asset === undefined)
    throw notFound(`no dashboard asset ${JSON.stringify(c.req.param("name").slice(0, 40))}`);
  return c.body(asset.body, 200, {
    ...SECURITY_HEADERS,
    "Content-Type": asset.type,
    "Cache-Control": asset.cache,
  });
});

dashboardRoutes.get("/dashboard/api/pool", async (c) => {
  const pool = poolOf(c.req.raw);
  const report = await poolReport(c.env, pool);
  return c.json(dashboardView(pool, report, Date.now()), 200, { "Cache-Control": "no-store" });
});
