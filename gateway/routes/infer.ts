import type { Context } from "hono";
import { Hono } from "hono";
import { readInferRequest } from "../../shared/oip/infer-http.ts";
import { gatewayConfig } from "../config.ts";
import type { Env } from "../env.ts";
import { poolOf } from "../pool.ts";
import { inferResponse, maxInferBodyBytes } from "../pool-infer.ts";
import { inferOrQueue, preferredWait } from "./queue.ts";

/**
 * POST /v2/models/{model}[/versions/{version}]/infer. The Worker checks what it can without a backend
 * (key, size, names, the OIP body itself, so an agent never sees a malformed request: shared/oip/infer-http.ts,
 * as the standalone agent does), then runs the raw body through the pool (pool-call.ts: a slot from its
 * registry, the body to the agent's relay) and returns the agent's response body unchanged.
 */
export const inferRoutes = new Hono<{ Bindings: Env }>();

inferRoutes.post("/v2/models/:model/infer", infer);
inferRoutes.post("/v2/models/:model/versions/:version/infer", infer);

async function infer(c: Context<{ Bindings: Env }>): Promise<Response> {
  const started = Date.now();
  // `Prefer: wait=<s>`: through the managed queue, answered here when ready within s seconds (routes/queue.ts).
  const wait = preferredWait(c.req.header("Prefer"));
  if (wait !== undefined) return inferOrQueue(c, wait);
  const config = gatewayConfig(c.env);
  const request = await readInferRequest(
    c.req.raw,
    { model: c.req.param("model"), version: c.req.param("version") },
    {
      maxBodyBytes: maxInferBodyBytes(config),
      defaultTimeoutMs: config.DEFAULT_TIMEOUT_SECONDS * 1000,
    },
  );
  return inferResponse(
    c.env,
    poolOf(c.req.raw),
    {
      model: request.model,
      ...(request.version === undefined ? {} : { version: request.version }),
      ...(request.hint === undefined ? {} : { hint: request.hint }),
      body: request.body,
      ...(request.headerLength === undefined ? {} : { headerLength: request.headerLength }),
      timeoutMs: request.deadline.remainingMs(),
      budgetMs: request.deadline.budgetMs,
      requestId: request.requestId,
    },
    started,
  );
}
