import type { Context } from "hono";
import { Hono } from "hono";
import { SwitchyardError } from "../../shared/errors.ts";
import { errorResponse } from "../../shared/http/error-response.ts";
import { inferResponseHeaders, readInferRequest } from "../../shared/oip/infer-http.ts";
import { MAX_FRAME_BYTES } from "../../shared/protocol/frames.ts";
import { gatewayConfig } from "../config.ts";
import type { Env } from "../env.ts";
import { poolOf } from "../pool.ts";
import { inferThroughPool } from "../pool-call.ts";

/** Room left in a relayed frame for its JSON header (ids, model name, hint). */
const FRAME_HEADER_ALLOWANCE = 8 * 1024;

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
  const config = gatewayConfig(c.env);
  const request = await readInferRequest(
    c.req.raw,
    { model: c.req.param("model"), version: c.req.param("version") },
    {
      maxBodyBytes: Math.min(config.MAX_BODY_BYTES, MAX_FRAME_BYTES - FRAME_HEADER_ALLOWANCE),
      defaultTimeoutMs: config.DEFAULT_TIMEOUT_SECONDS * 1000,
    },
  );
  const outcome = await inferThroughPool(c.env, poolOf(c.req.raw), {
    model: request.model,
    ...(request.version === undefined ? {} : { version: request.version }),
    ...(request.hint === undefined ? {} : { hint: request.hint }),
    body: request.body,
    ...(request.headerLength === undefined ? {} : { headerLength: request.headerLength }),
    timeoutMs: request.deadline.remainingMs(),
    budgetMs: request.deadline.budgetMs,
    requestId: request.requestId,
  });

  if (!outcome.ok) {
    const failure = SwitchyardError.fromStatus(
      outcome.status,
      outcome.message,
      outcome.retryAfterSeconds === undefined ? undefined : { retryAfterSeconds: outcome.retryAfterSeconds },
    );
    return errorResponse(failure, {
      "X-Request-Id": request.requestId,
      ...(outcome.replica === undefined ? {} : { "X-Switchyard-Replica": outcome.replica }),
    });
  }
  const { timings } = outcome;
  const headers = inferResponseHeaders({
    requestId: request.requestId,
    replica: outcome.replica,
    cache: outcome.cache,
    contentType: outcome.contentType,
    ...(outcome.headerLength === undefined ? {} : { headerLength: outcome.headerLength }),
    timings: {
      queue: timings.gatewayQueueMs + timings.queueMs,
      load: timings.loadMs,
      infer: timings.inferMs,
      // Not OIP phases: each hop's share, without comparing clocks. The Worker's own is total - registry
      // (registry: the whole time in the pool, its asks and runs), the asks' and relay's registry - roundtrip,
      // the websocket's both ways roundtrip - agent.
      registry: timings.registryMs,
      roundtrip: timings.roundTripMs,
      ...(timings.agentMs === undefined ? {} : { agent: timings.agentMs }),
      total: Date.now() - started,
    },
  });
  return new Response(outcome.body, { status: 200, headers });
}
