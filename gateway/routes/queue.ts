import type { Context } from "hono";
import { Hono } from "hono";
import { badInput, notFound, SwitchyardError } from "../../shared/errors.ts";
import { errorResponse } from "../../shared/http/error-response.ts";
import { readInferRequest } from "../../shared/oip/infer-http.ts";
import {
  isFinished,
  type QueueHandles,
  type QueueStatus,
  queueHandles,
  statusChangeKey,
} from "../../shared/queue/queue-status.ts";
import { bearerToken } from "../auth.ts";
import { gatewayConfig } from "../config.ts";
import type { Env } from "../env.ts";
import { keyDigest } from "../key-digest.ts";
import { type QueueCalls, queueStub } from "../object-bindings.ts";
import { poolOf } from "../pool.ts";
import { maxInferBodyBytes } from "../pool-infer.ts";
import { type Lookup, queueBodyKey, type ResultLookup, type StoredResult } from "../queue/queue-calls.ts";
import { INLINE_BYTES } from "../queue/queue-store.ts";
import { checkWebhookUrl } from "../queue/webhooks.ts";

/**
 * The managed queue's HTTP API (queue/request-queue.ts keeps the requests): submit an OIP infer request
 * now, follow its status (JSON, or Server-Sent Events), fetch its result later, exactly as the synchronous
 * call would have answered it, or cancel it. A request id is visible only to the API key that submitted it;
 * to any other it does not exist.
 *
 *   POST /v2/queue/models/{m}[/versions/{v}]/infer      -> 202 with the request's handles
 *   GET  /v2/queue/models/{m}/requests/{id}/status      -> 202 while queued or running, 200 once finished
 *   GET  /v2/queue/models/{m}/requests/{id}/status/stream   the same as text/event-stream, until finished
 *   GET  /v2/queue/models/{m}/requests/{id}             -> its result; 202 with its status until then
 *   PUT  /v2/queue/models/{m}/requests/{id}/cancel      -> 202 CANCELLATION_REQUESTED, 400 ALREADY_COMPLETED
 */
export const queueRoutes = new Hono<{ Bindings: Env }>();

queueRoutes.post("/v2/queue/models/:model/infer", submit);
queueRoutes.post("/v2/queue/models/:model/versions/:version/infer", submit);
queueRoutes.get("/v2/queue/models/:model/requests/:id/status", status);
queueRoutes.get("/v2/queue/models/:model/requests/:id/status/stream", statusStream);
queueRoutes.get("/v2/queue/models/:model/requests/:id", result);
queueRoutes.put("/v2/queue/models/:model/requests/:id/cancel", cancel);

type QueueContext = Context<{ Bindings: Env }>;

/** How often a status stream looks again, and how long it stays open at most (the client reconnects). */
const STREAM_POLL_MS = 250;
const STREAM_MAX_MS = 30 * 60 * 1000;
const STREAM_KEEPALIVE_MS = 15_000;

const REQUEST_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

async function submit(c: QueueContext): Promise<Response> {
  const { queued, handles } = await enqueue(c);
  return Response.json({ ...queued, ...handles }, { status: 202, headers: { Location: handles.status_url } });
}

/** The longest `Prefer: wait` honoured (Replicate's cap too): past it a client should follow the queue. */
const MAX_PREFER_WAIT_SECONDS = 60;
const PREFER_WAIT_POLL_MS = 50;

/** `Prefer: wait=<seconds>` (RFC 7240; Replicate's use of it), capped; undefined when not asked for. */
export function preferredWait(header: string | undefined): number | undefined {
  const match = header?.match(/(?:^|[,;\s])wait\s*=\s*(\d+)/i);
  return match === null || match === undefined
    ? undefined
    : Math.min(Number(match[1]), MAX_PREFER_WAIT_SECONDS);
}

/**
 * A synchronous infer with `Prefer: wait=<s>`: the request goes through the managed queue, and its answer
 * comes back here if it is ready within s seconds, exactly as a plain infer would have answered; otherwise
 * 202 with the queue's handles, so that no client holds a connection for minutes.
 */
export async function inferOrQueue(c: QueueContext, waitSeconds: number): Promise<Response> {
  const { queued, handles, id, owner, stub } = await enqueue(c);
  const until = Date.now() + waitSeconds * 1000;
  let latest = queued;
  while (Date.now() < until) {
    const lookedUp = (await stub.result(id, owner)) as ResultLookup;
    if (lookedUp.kind !== "found") break;
    latest = lookedUp.queue;
    if (lookedUp.result !== undefined || isFinished(lookedUp.queue.status))
      return resultResponse(c, lookedUp);
    await new Promise((resolve) => setTimeout(resolve, PREFER_WAIT_POLL_MS));
  }
  return Response.json(
    { ...latest, ...handles },
    {
      status: 202,
      headers: { Location: handles.status_url, "Preference-Applied": `wait=${waitSeconds}` },
    },
  );
}

/** Reads and checks an infer request as the synchronous route does, and hands it to the pool's queue. */
async function enqueue(c: QueueContext) {
  const config = gatewayConfig(c.env);
  const pool = poolOf(c.req.raw);
  const webhookParameter = c.req.query("webhook");
  let webhook: string | undefined;
  if (webhookParameter !== undefined) {
    webhook = checkWebhookUrl(webhookParameter, new URL(c.req.url));
    if (c.env.WEBHOOK_SECRET === undefined || c.env.WEBHOOK_SECRET === "") {
      throw badInput("this gateway has no WEBHOOK_SECRET to sign webhooks with: ask its operator to set one");
    }
  }
  // Nothing malformed is ever kept; the request's deadline (X-Request-Timeout) is a deadline to start,
  // QUEUE_START_TIMEOUT_SECONDS when it names none.
  const request = await readInferRequest(
    c.req.raw,
    { model: c.req.param("model"), version: c.req.param("version") },
    { maxBodyBytes: maxInferBodyBytes(config), defaultTimeoutMs: config.QUEUE_START_TIMEOUT_SECONDS * 1000 },
  );
  const id = crypto.randomUUID();
  const owner = await ownerOf(c);
  const inline = request.body.byteLength <= INLINE_BYTES;
  const bodyKey = inline ? undefined : queueBodyKey(pool, id);
  if (bodyKey !== undefined) await c.env.QUEUE_STORE.put(bodyKey, request.body);
  const stub = queueStub(c.env.REQUEST_QUEUE, pool);
  const handles = handlesOf(c, pool, request.model, id);
  const answer = await stub.submit({
    id,
    pool,
    owner,
    model: request.model,
    ...(request.version === undefined ? {} : { version: request.version }),
    ...(request.hint === undefined ? {} : { hint: request.hint }),
    ...(request.headerLength === undefined ? {} : { headerLength: request.headerLength }),
    ...(inline ? { body: request.body } : { bodyKey }),
    bodyBytes: request.body.byteLength,
    startWithinMs: request.deadline.budgetMs,
    responseUrl: handles.response_url,
    ...(webhook === undefined ? {} : { webhook }),
  });
  if (!answer.ok) {
    if (bodyKey !== undefined) await c.env.QUEUE_STORE.delete(bodyKey);
    throw new SwitchyardError("queue_full", answer.message, { retryAfterSeconds: 5 });
  }
  return { queued: answer.status, handles, id, owner, stub };
}

async function status(c: QueueContext): Promise<Response> {
  const { queue: stub, id, owner } = await addressed(c);
  const { queue } = found(c, await stub.status(id, owner));
  return Response.json(
    { ...queue, ...handlesOf(c, poolOf(c.req.raw), queue.model, queue.request_id) },
    { status: isFinished(queue.status) ? 200 : 202 },
  );
}

/** The status as Server-Sent Events: one `status` event per change, the last one when it finished. */
async function statusStream(c: QueueContext): Promise<Response> {
  // The first lookup answers 404/410 as a plain error, before any stream starts.
  const { queue: stub, id, owner } = await addressed(c);
  let { queue } = found(c, await stub.status(id, owner));
  const pool = poolOf(c.req.raw);
  const encoder = new TextEncoder();
  const signal = c.req.raw.signal;
  const { readable, writable } = new TransformStream<Uint8Array, Uint8Array>();
  const writer = writable.getWriter();
  const send = (text: string) => writer.write(encoder.encode(text));
  const event = (current: QueueStatus) =>
    send(
      `event: status\ndata: ${JSON.stringify({ ...current, ...handlesOf(c, pool, current.model, current.request_id) })}\n\n`,
    );
  // Written after the response went out: the status as it changes, until it finished or the client left.
  const follow = async () => {
    const openedAt = Date.now();
    let last = statusChangeKey(queue);
    let sentAt = Date.now();
    try {
      await event(queue);
      while (!isFinished(queue.status) && !signal.aborted && Date.now() - openedAt < STREAM_MAX_MS) {
        await new Promise((resolve) => setTimeout(resolve, STREAM_POLL_MS));
        const next = await stub.status(id, owner);
        if (next.kind !== "found") break;
        queue = next.queue;
        const text = statusChangeKey(queue);
        if (text !== last) {
          last = text;
          sentAt = Date.now();
          await event(queue);
        } else if (Date.now() - sentAt >= STREAM_KEEPALIVE_MS) {
          sentAt = Date.now();
          await send(": still waiting\n\n");
        }
      }
      await writer.close();
    } catch {
      // The client went away, or the queue could not be reached: the stream ends; the client may reconnect.
      await writer.abort().catch(() => undefined);
    }
  };
  c.executionCtx.waitUntil(follow());
  return new Response(readable, {
    status: 200,
    headers: { "Content-Type": "text/event-stream", "Cache-Control": "no-cache", Connection: "keep-alive" },
  });
}

async function result(c: QueueContext): Promise<Response> {
  const { queue: stub, id, owner } = await addressed(c);
  return resultResponse(c, found(c, (await stub.result(id, owner)) as ResultLookup));
}

/** A request's result as the synchronous call answered it; its status (202) while it has none yet. */
async function resultResponse(
  c: QueueContext,
  { queue, result: stored }: { queue: QueueStatus; result?: StoredResult | undefined },
): Promise<Response> {
  if (stored !== undefined) {
    let body: BodyInit | null = stored.body ?? null;
    if (stored.bodyKey !== undefined) {
      const object = await c.env.QUEUE_STORE.get(stored.bodyKey);
      if (object === null)
        throw new SwitchyardError("internal", `the result of request '${queue.request_id}' is missing`);
      body = object.body;
    }
    return new Response(body, { status: stored.status, headers: stored.headers });
  }
  switch (queue.status) {
    case "CANCELLED":
      return errorResponse(
        new SwitchyardError("conflict", `request '${queue.request_id}' was cancelled: it has no result`),
      );
    case "FAILED":
      // Failed before the pool answered it (its body was lost, say): the reason is all there is.
      return errorResponse(
        new SwitchyardError(
          "internal",
          `request '${queue.request_id}' failed: ${queue.error ?? "internal error"}`,
        ),
      );
    case "TIMED_OUT":
      return errorResponse(
        new SwitchyardError(
          "deadline_exceeded",
          `request '${queue.request_id}' timed out: ${queue.error ?? ""}`,
        ),
      );
    default:
      return Response.json(
        { ...queue, ...handlesOf(c, poolOf(c.req.raw), queue.model, queue.request_id) },
        { status: 202 },
      );
  }
}

async function cancel(c: QueueContext): Promise<Response> {
  const { queue: stub, id, owner } = await addressed(c);
  const { answer, queue } = found(c, await stub.cancel(id, owner));
  const handles = handlesOf(c, poolOf(c.req.raw), queue.model, queue.request_id);
  if (answer === "ALREADY_COMPLETED") {
    return Response.json(
      {
        error: `request '${queue.request_id}' already finished (${queue.status}); there is nothing to cancel`,
        status: answer,
        request: { ...queue, ...handles },
      },
      { status: 400 },
    );
  }
  return Response.json({ status: answer, request: { ...queue, ...handles } }, { status: 202 });
}

/** The pool's queue, the request id in the path (checked), and the presenting key's owner digest. */
async function addressed(
  c: QueueContext,
): Promise<{ queue: DurableObjectStub<QueueCalls>; id: string; owner: string }> {
  const id = c.req.param("id") ?? "";
  if (!REQUEST_ID.test(id)) throw badInput(`'${id}' is not a request id (the request_id a submit answered)`);
  return { queue: queueStub(c.env.REQUEST_QUEUE, poolOf(c.req.raw)), id, owner: await ownerOf(c) };
}

/** The found request, as long as it belongs to the model in the path; otherwise the 404 or 410. */
function found<L extends Lookup<{ queue: QueueStatus }>>(
  c: QueueContext,
  lookedUp: L,
): Extract<L, { kind: "found" }> {
  const id = c.req.param("id");
  if (lookedUp.kind === "expired") {
    throw new SwitchyardError(
      "gone",
      `request '${id}' finished and its result expired at ${new Date(lookedUp.expiredAt).toISOString()} (QUEUE_RESULT_TTL_SECONDS)`,
    );
  }
  if (lookedUp.kind === "missing" || lookedUp.queue.model !== c.req.param("model")) {
    throw notFound(
      `request '${id}' not found for model '${c.req.param("model")}' (with this API key, in this pool)`,
    );
  }
  return lookedUp as Extract<L, { kind: "found" }>;
}

function ownerOf(c: QueueContext): Promise<string> {
  return keyDigest(bearerToken(c.req.raw.headers, "client"));
}

function handlesOf(c: QueueContext, pool: string, model: string, id: string): QueueHandles {
  return queueHandles(new URL(c.req.url).origin, pool, model, id);
}
