import { Hono } from "hono";
import type { Env } from "../env.ts";
import { poolOf, registryOf } from "../pool.ts";

/**
 * GET /agent/connect: an agent's websocket (agent token checked by the app). The upgrade is handed to the
 * pool's registry as it is; the registry accepts the socket and expects a hello frame first.
 */
export const agentConnectRoutes = new Hono<{ Bindings: Env }>();

agentConnectRoutes.get("/agent/connect", (c) => registryOf(c.env, poolOf(c.req.raw)).fetch(c.req.raw));
