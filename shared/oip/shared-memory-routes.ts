import { Hono } from "hono";
import { badInput, notFound } from "../errors.ts";
import { readRequestBody } from "../http/request-body.ts";
import { jsonOf, MAX_CONTROL_BODY_BYTES } from "./model-control.ts";
import { parseOrBadInput } from "./schemas.ts";
import {
  notRegisteredMessage,
  type RegionStatus,
  type RegisterRegionRequest,
  registerRegionSchema,
  SHARED_MEMORY_NOT_OFFERED,
} from "./shared-memory.ts";

/** A server's registered regions, as its shared-memory endpoints change and list them. */
export interface RegionsControl {
  /** Every region, or the one named (a name not registered is a 404). */
  status(name?: string): RegionStatus[];
  /** Resolves once a request that follows would find the region, on whichever thread decodes it. */
  register(name: string, request: RegisterRegionRequest): Promise<void>;
  /** The one named, or all; a name not registered is no error, as in Triton. */
  unregister(name?: string): Promise<void>;
}

/**
 * Triton's shared-memory endpoints, the same on both servers. With `regions` (the standalone agent started
 * with --allow-client-shm) system shared memory is offered. Without (the gateway, or an agent without the
 * flag) nothing can be registered: status lists nothing, unregister has nothing to do (so a client's
 * clean-up at exit still succeeds), register is a 400 that says where shared memory is offered. CUDA
 * shared memory is offered by neither (a CUDA IPC handle needs the CUDA runtime in the server's own code):
 * the same answers, register's saying to use system shared memory.
 */
export function sharedMemoryRoutes(regions: RegionsControl | undefined): Hono {
  const routes = new Hono();
  const system = "/v2/systemsharedmemory";
  for (const path of [`${system}/status`, `${system}/region/:name/status`]) {
    routes.get(path, (c) => {
      const name = c.req.param("name");
      if (regions !== undefined) return c.json(regions.status(name));
      if (name !== undefined) throw notRegistered(name);
      return c.json([]);
    });
  }
  routes.post(`${system}/region/:name/register`, async (c) => {
    const request = parseOrBadInput(
      registerRegionSchema,
      jsonOf(await readRequestBody(c.req.raw, MAX_CONTROL_BODY_BYTES)),
      "request body",
    );
    if (regions === undefined) throw badInput(SHARED_MEMORY_NOT_OFFERED);
    await regions.register(c.req.param("name"), request);
    return c.json({});
  });
  for (const path of [`${system}/unregister`, `${system}/region/:name/unregister`]) {
    routes.post(path, async (c) => {
      await regions?.unregister(c.req.param("name"));
      return c.json({});
    });
  }

  const cuda = "/v2/cudasharedmemory";
  for (const path of [`${cuda}/status`, `${cuda}/region/:name/status`]) {
    routes.get(path, (c) => {
      const name = c.req.param("name");
      if (name !== undefined) throw notRegistered(name);
      return c.json([]);
    });
  }
  routes.post(`${cuda}/region/:name/register`, () => {
    throw badInput(
      "CUDA shared memory is not offered: copy the tensors to host memory and register that as system shared memory",
    );
  });
  for (const path of [`${cuda}/unregister`, `${cuda}/region/:name/unregister`]) {
    routes.post(path, (c) => c.json({}));
  }
  return routes;
}

const notRegistered = (name: string) => notFound(notRegisteredMessage(name));
