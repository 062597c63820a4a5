import type { Context } from "hono";
import { Hono } from "hono";
import { readRequestBody } from "../../shared/http/request-body.ts";
import { parseModelName, parseModelVersion } from "../../shared/model-names.ts";
import { decodeInferRequest, INFERENCE_HEADER_CONTENT_LENGTH } from "../../shared/oip/codec.ts";
import {
  readHeaderLength,
  readHint,
  readTimeoutMs,
  requestIdHeader,
  serverTiming,
} from "../../shared/oip/request-options.ts";
import { MAX_FRAME_BYTES } from "../../shared/protocol/frames.ts";
import { type Env, readConfig } from "../env.ts";
import { poolOf } from "../pool.ts";
import type { InferOutcome } from "../registry/relay-types.ts";
import { inferThroughRegistry } from "../registry-call.ts";

/** Room left in a relayed frame for its JSON header (ids, model name, hint). */
const FRAME_HEADER_ALLOWANCE = 8 * 1024;
/** Longest deadline a request may ask for; timers cannot go much beyond 24 days anyway. */
const MAX_TIMEOUT_MS = 60 * 60 * 1000;

/**
 * POST /v2/models/{model}[/versions/{version}]/infer. The Worker checks what it can without a backend
 * (key, size, names, the OIP body itself, so an agent never sees a malformed request), then hands the
 * raw body to the pool's registry and returns the agent's response body unchanged.
 */
export const inferRoutes = new Hono<{ Bindings: Env }>();

inferRoutes.post("/v2/models/:model/infer", infer);
inferRoutes.post("/v2/models/:model/versions/:version/infer", infer);

async function infer(c: Context<{ Bindings: Env }>): Promise<Response> {
  const started = Date.now();
  const config = readConfig(c.env);
  const model = parseModelName(c.req.param("model") ?? "");
  const versionParam = c.req.param("version");
  const version = versionParam === undefined ? undefined : parseModelVersion(versionParam);
  const maxBytes = Math.min(config.MAX_BODY_BYTES, MAX_FRAME_BYTES - FRAME_HEADER_ALLOWANCE);
  const body = await readRequestBody(c.req.raw, maxBytes, "request body");
  const headers = c.req.raw.headers;
  const headerLength = readHeaderLength(headers);
  const request = decodeInferRequest(body, headerLength);
  const hint = readHint(headers);
  const timeoutMs = Math.min(
    readTimeoutMs(headers, request.parameters, config.DEFAULT_TIMEOUT_SECONDS * 1000),
    MAX_TIMEOUT_MS,
  );
  const pool = poolOf(c.req.raw);
  const requestId = requestIdHeader(request.id);

  const outcome: InferOutcome = await inferThroughRegistry(c.env, pool, {
    model,
    ...(version === undefined ? {} : { version }),
    ...(hint === undefined ? {} : { hint }),
    body,
    ...(headerLength === undefined ? {} : { headerLength }),
    timeoutMs,
    requestId: requestId.slice(0, 128),
  });

  const responseHeaders: Record<string, string> = { "X-Request-Id": requestId };
  if (!outcome.ok) {
    if (outcome.replica !== undefined) responseHeaders["X-Switchyard-Replica"] = outcome.replica;
    if (outcome.retryAfterSeconds !== undefined)
      responseHeaders["Retry-After"] = String(outcome.retryAfterSeconds);
    return Response.json({ error: outcome.message }, { status: outcome.status, headers: responseHeaders });
  }
  const { timings } = outcome;
  responseHeaders["Content-Type"] = outcome.contentType;
  responseHeaders["X-Switchyard-Replica"] = outcome.replica;
  responseHeaders["X-Switchyard-Cache"] = outcome.cache;
  responseHeaders["Server-Timing"] = serverTiming({
    queue: timings.gatewayQueueMs + timings.queueMs,
    load: timings.loadMs,
    infer: timings.inferMs,
    // Not an OIP phase: the round trip to the agent, so the relay's own cost is visible (roundtrip - the rest).
    agent: timings.roundTripMs,
    total: Date.now() - started,
  });
  if (outcome.headerLength !== undefined) {
    responseHeaders[INFERENCE_HEADER_CONTENT_LENGTH] = String(outcome.headerLength);
  }
  return new Response(outcome.body, { status: 200, headers: responseHeaders });
}
