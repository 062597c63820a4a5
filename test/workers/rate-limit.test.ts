import { createExecutionContext } from "cloudflare:test";
import { env } from "cloudflare:workers";
import { describe, expect, it } from "vitest";
import { createApp } from "../../gateway/app.ts";
import { freshPool, SMALL_REQUEST } from "./support/gateway.ts";

// The gateway under test runs without a rate limit (other tests share its keys); here the same app runs
// with RATE_LIMIT_PER_MINUTE set, on the same bindings (Durable Objects included).
const app = createApp();

function inferAs(key: string, vars: Record<string, string>): Promise<Response> {
  const request = new Request("https://gateway.test/v2/models/m/infer", {
    method: "POST",
    headers: { Authorization: `Bearer ${key}`, "X-Switchyard-Pool": freshPool() },
    body: SMALL_REQUEST,
  });
  return Promise.resolve(app.fetch(request, { ...env, ...vars }, createExecutionContext()));
}

describe("per-key rate limits", () => {
  it("lets a key burst up to its bucket, then answers 429 with Retry-After; other keys are not affected", async () => {
    const [busy, quiet] = [`busy-${crypto.randomUUID()}`, `quiet-${crypto.randomUUID()}`];
    const vars = { API_KEYS: `${busy},${quiet}`, RATE_LIMIT_PER_MINUTE: "6", RATE_LIMIT_BURST: "3" };
    // No agent in these pools: an admitted request gets 503, a limited one 429 before it gets that far.
    const statuses = [];
    for (let index = 0; index < 3; index += 1) statuses.push((await inferAs(busy, vars)).status);
    expect(statuses).toEqual([503, 503, 503]);
    const limited = await inferAs(busy, vars);
    expect(limited.status).toBe(429);
    // One token every 10 s at 6 per minute.
    expect(Number(limited.headers.get("Retry-After"))).toBeGreaterThanOrEqual(9);
    expect(Number(limited.headers.get("Retry-After"))).toBeLessThanOrEqual(10);
    const body = await limited.text();
    expect(JSON.parse(body).error).toMatch(/rate limit of 6 inferences per minute \(bursts of 3\) is spent/);
    expect(body).not.toContain(busy);
    expect((await inferAs(quiet, vars)).status).toBe(503);
  });

  it("is off when RATE_LIMIT_PER_MINUTE is 0 (the default)", async () => {
    const key = `free-${crypto.randomUUID()}`;
    for (let index = 0; index < 10; index += 1) {
      expect((await inferAs(key, { API_KEYS: key, RATE_LIMIT_PER_MINUTE: "0" })).status).toBe(503);
    }
  });
});
