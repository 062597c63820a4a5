import { SwitchyardError } from "../shared/errors.ts";
import { errorResponse } from "../shared/http/error-response.ts";
import { inferResponseHeaders } from "../shared/oip/infer-http.ts";
import { MAX_FRAME_BYTES } from "../shared/protocol/frames.ts";
import type { GatewayConfig } from "./config.ts";
import type { Env } from "./env.ts";
import { inferThroughPool } from "./pool-call.ts";
import type { RelayedRequest, RelayOutcome } from "./pool-calls.ts";

/** Room left in a relayed frame for its JSON header (ids, model name, hint). */
const FRAME_HEADER_ALLOWANCE = 8 * 1024;

/** The largest infer body the gateway takes: its configured limit, within what one relayed frame carries. */
export function maxInferBodyBytes(config: GatewayConfig): number {
  return Math.min(config.MAX_BODY_BYTES, MAX_FRAME_BYTES - FRAME_HEADER_ALLOWANCE);
}

/**
 * One inference through a pool, answered as `POST .../infer` answers it: the agent's body with the request
 * id, replica, cache and Server-Timing headers, or the error response. The synchronous route returns it;
 * the managed queue (queue/request-queue.ts) keeps it, so that a result fetched later is the very answer
 * the synchronous call would have given. `startedAt`: when the gateway took the request (Server-Timing's
 * total counts from there).
 */
export async function inferResponse(
  env: Env,
  pool: string,
  call: RelayedRequest & { requestId: string },
  startedAt: number,
): Promise<Response> {
  return responseOf(await inferThroughPool(env, pool, call), call.requestId, startedAt);
}

/** The response of an inference whose outcome is `outcome` (see inferResponse). */
export function responseOf(outcome: RelayOutcome, requestId: string, startedAt: number): Response {
  if (!outcome.ok) {
    const failure = SwitchyardError.fromStatus(
      outcome.status,
      outcome.message,
      outcome.retryAfterSeconds === undefined ? undefined : { retryAfterSeconds: outcome.retryAfterSeconds },
    );
    return errorResponse(failure, {
      "X-Request-Id": requestId,
      ...(outcome.replica === undefined ? {} : { "X-Switchyard-Replica": outcome.replica }),
    });
  }
  const { timings } = outcome;
  const headers = inferResponseHeaders({
    requestId,
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
      total: Date.now() - startedAt,
    },
  });
  return new Response(outcome.body, { status: 200, headers });
}
