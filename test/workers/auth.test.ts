import { describe, expect, it } from "vitest";
import { createApp } from "../../gateway/app.ts";
import {
  ADMIN_KEY,
  AGENT_TOKEN,
  CLIENT_KEY,
  freshPool,
  gatewayFetch,
  SMALL_REQUEST,
} from "./support/gateway.ts";

interface Route {
  method: string;
  path: string;
  body?: string;
  headers?: Record<string, string>;
}

const clientRoutes: Route[] = [
  { method: "GET", path: "/v2" },
  { method: "GET", path: "/v2/models/m" },
  { method: "GET", path: "/v2/models/m/versions/1" },
  { method: "GET", path: "/v2/models/m/ready" },
  { method: "GET", path: "/v2/models/m/versions/1/ready" },
  { method: "GET", path: "/v2/models/m/config" },
  { method: "GET", path: "/v2/models/m/versions/1/config" },
  { method: "GET", path: "/v2/models/stats" },
  { method: "GET", path: "/v2/models/m/stats" },
  { method: "GET", path: "/v2/models/m/versions/1/stats" },
  { method: "POST", path: "/v2/models/m/infer", body: SMALL_REQUEST },
  { method: "POST", path: "/v2/models/m/versions/1/infer", body: SMALL_REQUEST },
  { method: "POST", path: "/v2/repository/index", body: "{}" },
  { method: "POST", path: "/v2/queue/models/m/infer", body: SMALL_REQUEST },
  { method: "POST", path: "/v2/queue/models/m/versions/1/infer", body: SMALL_REQUEST },
  { method: "GET", path: `/v2/queue/models/m/requests/${crypto.randomUUID()}` },
  { method: "GET", path: `/v2/queue/models/m/requests/${crypto.randomUUID()}/status` },
  { method: "GET", path: `/v2/queue/models/m/requests/${crypto.randomUUID()}/status/stream` },
  { method: "PUT", path: `/v2/queue/models/m/requests/${crypto.randomUUID()}/cancel` },
  // Shared memory is offered by the standalone agent alone; the gateway answers the calls as one without it.
  { method: "GET", path: "/v2/systemsharedmemory/status" },
  { method: "GET", path: "/v2/systemsharedmemory/region/r/status" },
  { method: "POST", path: "/v2/systemsharedmemory/region/r/register", body: "{}" },
  { method: "POST", path: "/v2/systemsharedmemory/unregister" },
  { method: "POST", path: "/v2/systemsharedmemory/region/r/unregister" },
  { method: "GET", path: "/v2/cudasharedmemory/status" },
  { method: "GET", path: "/v2/cudasharedmemory/region/r/status" },
  { method: "POST", path: "/v2/cudasharedmemory/region/r/register", body: "{}" },
  { method: "POST", path: "/v2/cudasharedmemory/unregister" },
  { method: "POST", path: "/v2/cudasharedmemory/region/r/unregister" },
];
const agentRoutes: Route[] = [
  { method: "GET", path: "/agent/connect", headers: { Upgrade: "websocket" } },
  {
    method: "GET",
    path: "/agent/data?channel=3f0c8c2e-6a51-4a4e-9d55-2b8e0c1f7a10",
    headers: { Upgrade: "websocket" },
  },
  { method: "GET", path: "/agent/models/repository.json" },
  { method: "GET", path: "/agent/models/m/1/model.onnx" },
  { method: "GET", path: "/agent/models/m/1/config.json" },
  { method: "GET", path: "/agent/models/m/1/warmup/rows/one.bin" },
];
const adminRoutes: Route[] = [
  { method: "GET", path: "/admin/models" },
  { method: "PUT", path: "/admin/models/m/1", body: "onnx" },
  { method: "PUT", path: "/admin/models/m/1?file=config.json", body: "{}" },
  { method: "DELETE", path: "/admin/models/m/1" },
  { method: "GET", path: "/admin/models/m/policy" },
  { method: "PUT", path: "/admin/models/m/policy", body: "{}" },
  { method: "DELETE", path: "/admin/models/m/policy" },
  { method: "POST", path: `/admin/pools/${freshPool()}/restart` },
  // Model control changes what the whole pool keeps loaded: the admin key, not a client's.
  { method: "POST", path: "/v2/repository/models/m/load", body: "{}" },
  { method: "POST", path: "/v2/repository/models/m/unload", body: "{}" },
];
// Read-only operators' views: the admin key, or METRICS_TOKEN (not configured here).
const observerRoutes: Route[] = [
  { method: "GET", path: "/metrics" },
  { method: "GET", path: "/dashboard/api/pool" },
];
/**
 * Routes anyone may call: they hold no data (the dashboard's page and its scripts, and the health probes a
 * load balancer sends, which take no key unless HEALTH_REQUIRES_KEY is set).
 */
const publicRoutes: Route[] = [
  { method: "GET", path: "/dashboard" },
  { method: "GET", path: "/dashboard/assets/dashboard.js" },
  { method: "GET", path: "/v2/health/live" },
  { method: "GET", path: "/v2/health/ready" },
];

const kinds = [
  { kind: "client", key: CLIENT_KEY, routes: clientRoutes },
  { kind: "agent", key: AGENT_TOKEN, routes: agentRoutes },
  { kind: "admin", key: ADMIN_KEY, routes: adminRoutes },
  { kind: "observer", key: ADMIN_KEY, routes: observerRoutes },
] as const;

function send(route: Route, authorization: string | undefined): Promise<Response> {
  return gatewayFetch(route.path, {
    method: route.method,
    headers: {
      "X-Switchyard-Pool": freshPool(),
      ...route.headers,
      ...(authorization === undefined ? {} : { Authorization: authorization }),
    },
    ...(route.body === undefined ? {} : { body: route.body }),
  });
}

describe("authentication matrix", () => {
  it("covers every route the gateway serves, including routes added later", () => {
    const covered = [...kinds.flatMap((kind) => kind.routes), ...publicRoutes];
    const served = createApp()
      .routes.filter((route) => route.method !== "ALL")
      .map((route) => ({ method: route.method, pattern: route.path }));
    expect(served.length).toBeGreaterThan(15);
    for (const { method, pattern } of served) {
      // ":name" is one segment; ":name{regex}" what the regex matches.
      const matcher = new RegExp(
        `^${pattern.replace(/:[A-Za-z]+(?:\{([^}]+)\})?/g, (_, regex?: string) => regex ?? "[^/]+")}$`,
      );
      const hit = covered.some(
        (route) => route.method === method && matcher.test(new URL(route.path, "https://x").pathname),
      );
      expect(hit, `${method} ${pattern} is not in the auth matrix`).toBe(true);
    }
  });

  it("serves the public routes without a key, and with any key", async () => {
    for (const route of publicRoutes) {
      for (const authorization of [undefined, "Bearer not-a-key", `Bearer ${AGENT_TOKEN}`]) {
        const response = await send(route, authorization);
        // /v2/health/ready answers 503 in a pool without agents: not a refusal.
        expect([200, 503], `${route.path} ${authorization}`).toContain(response.status);
      }
    }
  });

  for (const { kind, key, routes } of kinds) {
    // The observer routes take the admin key too: for them, "another kind's key" is a client or agent key.
    const others = kinds.filter((other) => other.kind !== kind && other.key !== key);
    for (const route of routes) {
      const name = `${route.method} ${route.path}`;

      it(`${name}: 401 without a key, or with a malformed header`, async () => {
        for (const authorization of [undefined, "", `Basic ${btoa(`user:${key}`)}`, "Bearer"]) {
          const response = await send(route, authorization);
          expect(response.status, String(authorization)).toBe(401);
          expect(response.headers.get("WWW-Authenticate")).toBe('Bearer realm="switchyard"');
          const body = (await response.json()) as { error: string };
          expect(body.error).not.toContain(key);
        }
      });

      it(`${name}: 403 with a wrong key or a key of another kind`, async () => {
        for (const wrong of ["nope", `${key}x`, key.slice(0, -1), ...others.map((other) => other.key)]) {
          const response = await send(route, `Bearer ${wrong}`);
          expect(response.status, wrong).toBe(403);
          expect(await response.text()).not.toContain(wrong);
        }
      });

      it(`${name}: accepted with the ${kind} key`, async () => {
        const response = await send(route, `Bearer ${key}`);
        expect([401, 403]).not.toContain(response.status);
        if (response.webSocket !== null) response.webSocket.accept();
        response.webSocket?.close();
      });
    }
  }

  it("accepts every key of a comma-separated list, and the scheme in any case", async () => {
    for (const authorization of [
      "Bearer second-client-key",
      `bearer ${CLIENT_KEY}`,
      `BEARER  ${CLIENT_KEY}`,
    ]) {
      const response = await gatewayFetch("/v2", { headers: { Authorization: authorization } });
      expect(response.status, authorization).toBe(200);
    }
  });
});
