import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { oipInferRequest } from "../support/oip-arbitraries.ts";
import { CLIENT_KEY, freshPool, gatewayFetch, SMALL_REQUEST } from "./support/gateway.ts";

// Generated bad input against the managed queue's API (gateway/routes/queue.ts) inside workerd: infer bodies
// of every kind at submit, webhook URLs of every shape, request ids that are malformed, unknown or another
// key's. Whatever comes in, the answer is a 202 (a request that happens to be valid is queued) or a 4xx with
// an OIP error body, never a 5xx. No agent joins these pools, each property's run has one of its own, and its
// queue has room: a valid request is taken at once (IN_PROGRESS: it waits in the pool for an agent) until the
// test cancels it.

const SECOND_KEY = "second-client-key";

const headersOf = (pool: string, key = CLIENT_KEY) => ({
  Authorization: `Bearer ${key}`,
  "X-Switchyard-Pool": pool,
});

/** A 4xx whose body is exactly {"error": "<message>"}. */
async function expectRefusal(response: Response, what: string): Promise<string> {
  const text = await response.text();
  const said = `${what} -> ${response.status} ${text.slice(0, 300)}`;
  expect(response.status, said).toBeGreaterThanOrEqual(400);
  expect(response.status, said).toBeLessThan(500);
  const body = JSON.parse(text) as { error: string };
  expect(body, said).toEqual({ error: expect.any(String) });
  return body.error;
}

interface Queued {
  request_id: string;
  status: string;
  cancel_url: string;
}

/**
 * Cancels what a property queued, so that its pool's queue holds nothing once the run ends. A request drawn
 * with a deadline of a millisecond or so (X-Request-Timeout 0.001: a counterexample once drawn) may have
 * timed out before the cancel arrives: the documented 400 ALREADY_COMPLETED then, naming its end.
 */
async function cancel(queued: Queued, pool: string): Promise<void> {
  const url = new URL(queued.cancel_url);
  const response = await gatewayFetch(url.pathname + url.search, { method: "PUT", headers: headersOf(pool) });
  if (response.status === 202) {
    await response.body?.cancel();
    return;
  }
  expect(response.status).toBe(400);
  expect(await response.json()).toMatchObject({
    error: `request '${queued.request_id}' already finished (TIMED_OUT); there is nothing to cancel`,
    request: { status: "TIMED_OUT" },
  });
}

/** Webhook values as a careless or hostile client writes them. */
const webhookValue = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.webUrl({
    validSchemes: ["https", "http", "ftp", "file", "javascript", "ws"],
    withQueryParameters: true,
  }),
  fc.constantFrom(
    "",
    "https://",
    "https://user:secret@hooks.example/x",
    "http://127.0.0.1:9/hook",
    "http://localhost/hook",
    "http://[::1]/hook",
    "http://169.254.169.254/latest/meta-data",
    "javascript:alert(1)",
    "data:text/plain,hi",
    `https://hooks.example/${"x".repeat(3000)}`,
    "HTTPS://HOOKS.EXAMPLE/UPPER",
    "https://hooks.example:99999/port",
    "//hooks.example/relative",
  ),
);

describe("managed queue API under generated bad input", () => {
  it("submit bodies of every kind: 202 when valid, else a 4xx JSON error; never a 5xx", async () => {
    await fc.assert(
      fc.asyncProperty(oipInferRequest, async (request) => {
        const pool = freshPool();
        const response = await gatewayFetch("/v2/queue/models/m/infer", {
          method: "POST",
          headers: { ...headersOf(pool), ...request.headers },
          body: request.body,
        });
        if (response.status === 202) {
          const queued = (await response.json()) as Queued;
          // A deadline of a millisecond can pass before the answer is written: the submit then reports the
          // request as it is, TIMED_OUT (a counterexample drawn once: X-Request-Timeout 0.001, seed 24182429).
          expect(["IN_PROGRESS", "TIMED_OUT"], request.describe).toContain(queued.status);
          await cancel(queued, pool);
          return;
        }
        await expectRefusal(response, request.describe);
      }),
      { numRuns: 150 },
    );
  });

  it("a request whose deadline ends before its cancel (a counterexample once drawn) is refused as finished", async () => {
    const pool = freshPool();
    const response = await gatewayFetch("/v2/queue/models/m/infer", {
      method: "POST",
      headers: {
        ...headersOf(pool),
        "Content-Type": "application/octet-stream",
        "Inference-Header-Content-Length": "13",
        "X-Request-Timeout": "0.001",
      },
      body: '{"inputs":[]}',
    });
    expect(response.status).toBe(202);
    const queued = (await response.json()) as Queued;
    await new Promise((resolve) => setTimeout(resolve, 200));
    const url = new URL(queued.cancel_url);
    const refused = await gatewayFetch(url.pathname + url.search, {
      method: "PUT",
      headers: headersOf(pool),
    });
    expect(refused.status).toBe(400);
    expect(await refused.json()).toMatchObject({
      error: `request '${queued.request_id}' already finished (TIMED_OUT); there is nothing to cancel`,
      request: { status: "TIMED_OUT", error: "it did not start within its deadline (0 s)" },
    });
  });

  it("a request with no inputs (a counterexample once drawn) is queued and taken like any valid one", async () => {
    const pool = freshPool();
    const response = await gatewayFetch("/v2/queue/models/m/infer", {
      method: "POST",
      headers: { ...headersOf(pool), "Content-Type": "application/json" },
      body: JSON.stringify({ inputs: [] }),
    });
    expect(response.status).toBe(202);
    const queued = (await response.json()) as Queued;
    // A fresh pool's queue has room: the request leaves it at once, to wait in the pool for an agent.
    expect(queued.status).toBe("IN_PROGRESS");
    await cancel(queued, pool);
  });

  it("webhook URLs: only https without credentials is kept (plain http only to loopback from a local gateway, which this is not)", async () => {
    const seen = { kept: 0, refused: 0 };
    await fc.assert(
      fc.asyncProperty(webhookValue, async (value) => {
        const pool = freshPool();
        const response = await gatewayFetch(`/v2/queue/models/m/infer?webhook=${encodeURIComponent(value)}`, {
          method: "POST",
          headers: { ...headersOf(pool), "Content-Type": "application/json" },
          body: SMALL_REQUEST,
        });
        const what = `webhook ${JSON.stringify(value.slice(0, 120))}`;
        if (response.status !== 202) {
          expect(response.status, what).toBe(400);
          expect(await expectRefusal(response, what)).toMatch(/webhook/);
          seen.refused += 1;
          return;
        }
        // Kept: a URL a gateway on the internet may call.
        const url = new URL(value);
        expect(url.protocol, what).toBe("https:");
        expect(url.username + url.password, what).toBe("");
        expect(value.length, what).toBeLessThanOrEqual(2048);
        seen.kept += 1;
        await cancel((await response.json()) as Queued, pool);
      }),
      { numRuns: 150 },
    );
    // Both answers were drawn (this gateway has a WEBHOOK_SECRET, so a good URL is kept).
    expect(seen.kept).toBeGreaterThan(0);
    expect(seen.refused).toBeGreaterThan(0);
  });

  it("request ids in every lookup: malformed is 400, unknown or another key's is 404, each a JSON error", async () => {
    const pool = freshPool();
    const submitted = await gatewayFetch("/v2/queue/models/m/infer", {
      method: "POST",
      headers: { ...headersOf(pool), "Content-Type": "application/json" },
      body: SMALL_REQUEST,
    });
    expect(submitted.status).toBe(202);
    const mine = (await submitted.json()) as Queued;
    const id = fc.oneof(
      fc.uuid({ version: 4 }).map((uuid) => ({ id: uuid, kind: "unknown" as const })),
      fc
        .string({ minLength: 1, maxLength: 60 })
        .map((text) => ({ id: encodeURIComponent(text), kind: "any" as const })),
      fc.constantFrom(
        { id: mine.request_id, kind: "foreign" as const },
        { id: mine.request_id.toUpperCase(), kind: "any" as const },
        { id: `${mine.request_id}x`, kind: "any" as const },
        { id: "..%2F..%2Fadmin", kind: "any" as const },
        { id: "%00", kind: "any" as const },
      ),
    );
    const route = fc.constantFrom(
      { method: "GET", suffix: "/status" },
      { method: "GET", suffix: "/status/stream" },
      { method: "GET", suffix: "" },
      { method: "PUT", suffix: "/cancel" },
    );
    await fc.assert(
      fc.asyncProperty(id, route, async ({ id: requestId, kind }, { method, suffix }) => {
        // Another key asking for this pool's real request sees what any unknown id gets.
        const key = kind === "foreign" ? SECOND_KEY : CLIENT_KEY;
        const path = `/v2/queue/models/m/requests/${requestId}${suffix}`;
        const response = await gatewayFetch(path, { method, headers: headersOf(pool, key) });
        const what = `${method} ${path} (${kind})`;
        await expectRefusal(response, what);
        if (kind === "unknown" || kind === "foreign") expect(response.status, what).toBe(404);
        else expect([400, 404], what).toContain(response.status);
      }),
      { numRuns: 200 },
    );
    // The request itself is untouched by all of it: still queued, for its own key.
    const status = await gatewayFetch(`/v2/queue/models/m/requests/${mine.request_id}/status`, {
      headers: headersOf(pool),
    });
    expect(status.status).toBe(202);
    expect(((await status.json()) as Queued).status).toBe("IN_QUEUE");
    await cancel(mine, pool);
  });
});
