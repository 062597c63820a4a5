import { Hono } from "hono";
import { readRequestBody } from "../http/request-body.ts";
import { jsonOf, MAX_CONTROL_BODY_BYTES } from "./model-control.ts";
import { type RegionsControl, sharedMemoryEndpoints } from "./shared-memory-endpoints.ts";

/**
 * Triton's shared-memory endpoints over HTTP, the same on both servers; what each answers is
 * sharedMemoryEndpoints' (shared with the agent's gRPC calls).
 */
export function sharedMemoryRoutes(regions: RegionsControl | undefined): Hono {
  const endpoints = sharedMemoryEndpoints(regions);
  const routes = new Hono();
  const system = "/v2/systemsharedmemory";
  for (const path of [`${system}/status`, `${system}/region/:name/status`]) {
    routes.get(path, (c) => c.json(endpoints.systemStatus(c.req.param("name"))));
  }
  routes.post(`${system}/region/:name/register`, async (c) => {
    const body = jsonOf(await readRequestBody(c.req.raw, MAX_CONTROL_BODY_BYTES));
    await endpoints.systemRegister(c.req.param("name"), body);
    return c.json({});
  });
  for (const path of [`${system}/unregister`, `${system}/region/:name/unregister`]) {
    routes.post(path, async (c) => {
      await endpoints.systemUnregister(c.req.param("name"));
      return c.json({});
    });
  }

  const cuda = "/v2/cudasharedmemory";
  for (const path of [`${cuda}/status`, `${cuda}/region/:name/status`]) {
    routes.get(path, (c) => c.json(endpoints.cudaStatus(c.req.param("name"))));
  }
  routes.post(`${cuda}/region/:name/register`, () => endpoints.cudaRegister());
  for (const path of [`${cuda}/unregister`, `${cuda}/region/:name/unregister`]) {
    routes.post(path, (c) => {
      endpoints.cudaUnregister();
      return c.json({});
    });
  }
  return routes;
}
