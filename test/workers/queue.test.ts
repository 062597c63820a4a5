import { describe, expect, it } from "vitest";
import { MAX_FRAME_BYTES } from "../../shared/protocol/frames.ts";
import { ADMIN_KEY, CLIENT_KEY, errorOf, freshPool, gatewayFetch, SMALL_REQUEST } from "./support/gateway.ts";

// The managed queue's limits inside workerd (vitest.config.ts gives these tests QUEUE_IN_FLIGHT 1,
// QUEUE_ASYNC_LIMIT 8 and QUEUE_RESULT_TTL_SECONDS 1). What it does with real agents is in
// test/integration/gateway-queue.test.ts; an oversized body is tested here because wrangler dev's local
// proxy resets the connection instead of relaying the 413 (see test/integration/gateway-limits.test.ts).

function submit(pool: string, body: BodyInit = SMALL_REQUEST): Promise<Response> {
  return gatewayFetch("/v2/queue/models/m/infer", {
    method: "POST",
    headers: {
      Authorization: `Bearer ${CLIENT_KEY}`,
      "Content-Type": "application/json",
      "X-Switchyard-Pool": pool,
    },
    body,
  });
}

const client = (pool: string) => ({ Authorization: `Bearer ${CLIENT_KEY}`, "X-Switchyard-Pool": pool });

describe("managed queue limits", () => {
  it("refuses a body over the limit with 413 before keeping anything", async () => {
    const response = await submit(freshPool(), new Uint8Array(MAX_FRAME_BYTES));
    expect(response.status).toBe(413);
    expect(await errorOf(response)).toMatch(/larger than the limit/);
  });

  it("a pool's backlog is bounded: past QUEUE_ASYNC_LIMIT waiting requests a submit gets 429 with Retry-After", async () => {
    const pool = freshPool();
    const statuses: number[] = [];
    // No agent serves the pool: one request at a time is handed to it, the others wait.
    for (let index = 0; index < 12; index += 1) {
      const response = await submit(pool);
      statuses.push(response.status);
      if (response.status === 429) {
        expect(response.headers.get("retry-after")).toBe("5");
        expect(await errorOf(response)).toMatch(/QUEUE_ASYNC_LIMIT/);
        break;
      }
      await response.arrayBuffer();
    }
    expect(statuses.at(-1)).toBe(429);
    expect(statuses.filter((status) => status === 202).length).toBeGreaterThanOrEqual(8);
  });

  it("a backlog for a pool with no agent is not handed over request by request: the model pauses, doubling", async () => {
    const pool = freshPool();
    for (let index = 0; index < 8; index += 1) expect((await submit(pool)).status).toBe(202);
    // Each refusal (503: no agent) pauses the model 0.5 s, then 1 s, 2 s...: about three asks in 2.5 s,
    // where trying each waiting request in turn would have asked for all eight within the first second.
    await new Promise((resolve) => setTimeout(resolve, 2_500));
    const metrics = await gatewayFetch(`/metrics?pool=${pool}`, {
      headers: { Authorization: `Bearer ${ADMIN_KEY}` },
    });
    const deferred = Number(
      new RegExp(`queue_async_events_total\\{pool="${pool}",event="deferred"\\} (\\d+)`).exec(
        await metrics.text(),
      )?.[1],
    );
    expect(deferred).toBeGreaterThanOrEqual(1);
    expect(deferred).toBeLessThanOrEqual(4);
  });

  it("a finished request's record expires: 410 afterwards, for status, result and cancel alike", async () => {
    const pool = freshPool();
    const submitted = (await (await submit(pool)).json()) as {
      status_url: string;
      cancel_url: string;
      response_url: string;
    };
    const cancelled = await gatewayFetch(new URL(submitted.cancel_url).pathname, {
      method: "PUT",
      headers: client(pool),
    });
    expect(cancelled.status).toBe(202);
    expect(((await cancelled.json()) as { status: string }).status).toBe("CANCELLATION_REQUESTED");
    await new Promise((resolve) => setTimeout(resolve, 1_200));
    for (const [url, method] of [
      [submitted.status_url, "GET"],
      [submitted.response_url, "GET"],
      [submitted.cancel_url, "PUT"],
    ] as const) {
      const response = await gatewayFetch(new URL(url).pathname, { method, headers: client(pool) });
      expect(response.status).toBe(410);
      expect(await errorOf(response)).toMatch(/expired/);
    }
  });
});
