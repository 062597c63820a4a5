import { describe, expect, it } from "vitest";
import { MAX_FRAME_BYTES } from "../../shared/protocol/frames.ts";
import { CLIENT_KEY, errorOf, freshPool, gatewayFetch, SMALL_REQUEST } from "./support/gateway.ts";

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
