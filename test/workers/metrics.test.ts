import { evictDurableObject, runInDurableObject } from "cloudflare:test";
import { describe, expect, it } from "vitest";
import { METRICS_STORAGE_KEY } from "../../gateway/metrics/pool-metrics.ts";
import { PERSIST_DELAY_MS } from "../../gateway/registry/agent-store.ts";
import { sample } from "../support/prometheus-text.ts";
import { replicaState } from "../support/replica-state.ts";
import { FakeAgent } from "./support/fake-agent.ts";
import { ADMIN_KEY, AGENT_TOKEN, CLIENT_KEY, freshPool, gatewayFetch, infer } from "./support/gateway.ts";
import { registry } from "./support/registry.ts";

// /metrics and the dashboard's data, read as Prometheus and the page read them, while a fake agent serves.

async function scrape(pool: string, key = ADMIN_KEY): Promise<string> {
  const response = await gatewayFetch(`/metrics?pool=${pool}`, {
    headers: { Authorization: `Bearer ${key}` },
  });
  expect(response.status).toBe(200);
  expect(response.headers.get("content-type")).toContain("text/plain; version=0.0.4");
  return response.text();
}

async function serve(
  agent: FakeAgent,
  response: Promise<Response>,
  options: Parameters<FakeAgent["answer"]>[1],
) {
  agent.answer(await agent.nextInfer(), options);
  expect((await response).status).toBe(200);
}

describe("/metrics", () => {
  it("takes the admin key, and refuses no key (401) and a client or agent key (403)", async () => {
    expect((await gatewayFetch("/metrics")).status).toBe(401);
    for (const key of [CLIENT_KEY, AGENT_TOKEN, "made-up"]) {
      const response = await gatewayFetch("/metrics", { headers: { Authorization: `Bearer ${key}` } });
      expect(response.status).toBe(403);
      expect(await response.text()).not.toContain(key);
    }
    expect(await scrape("default")).toContain("# TYPE switchyard_gateway_requests_total counter");
  });

  it("counts requests, hits and misses, loads and evictions, and latency as the pool serves", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, {
      name: "gpu-a",
      replicas: [replicaState({ maxConcurrency: 2 })],
    });
    const idle = await scrape(pool);
    expect(sample(idle, "switchyard_gateway_agents", { pool, state: "serving" })).toBe(1);
    expect(sample(idle, "switchyard_gateway_replicas", { pool, device: "cpu" })).toBe(1);
    expect(sample(idle, "switchyard_gateway_agent_connections_total", { pool })).toBe(1);
    expect(sample(idle, "switchyard_gateway_request_duration_seconds_count", { pool })).toBe(0);

    // A miss that loads m1, a hit on it, then m2 replaces m1 (an eviction).
    await serve(agent, infer("m1", { pool }), { cache: "miss", state: replicaState({ loaded: ["m1"] }) });
    await serve(agent, infer("m1", { pool }), { cache: "hit", state: replicaState({ loaded: ["m1"] }) });
    await serve(agent, infer("m2", { pool }), { cache: "miss", state: replicaState({ loaded: ["m2"] }) });
    // Refused by the Worker before the registry sees it: the pool's counters do not count it (a refusal
    // costs no round trip to the registry), and the figures below show only what reached the pool.
    const response = await infer("m1", { pool, body: "{not json" });
    expect(response.status).toBe(400);

    const text = await scrape(pool);
    expect(sample(text, "switchyard_gateway_requests_total", { pool, model: "m1", status: "200" })).toBe(2);
    expect(sample(text, "switchyard_gateway_requests_total", { pool, model: "m2", status: "200" })).toBe(1);
    expect(sample(text, "switchyard_gateway_cache_hits_total", { pool, model: "m1" })).toBe(1);
    expect(sample(text, "switchyard_gateway_cache_misses_total", { pool, model: "m1" })).toBe(1);
    expect(sample(text, "switchyard_gateway_cache_misses_total", { pool, model: "m2" })).toBe(1);
    expect(sample(text, "switchyard_gateway_model_loads_total", { pool, model: "m1" })).toBe(1);
    expect(sample(text, "switchyard_gateway_model_loads_total", { pool, model: "m2" })).toBe(1);
    expect(sample(text, "switchyard_gateway_model_evictions_total", { pool, model: "m1" })).toBe(1);
    expect(
      sample(text, "switchyard_gateway_model_replicas", { pool, model: "m2", version: "1", state: "loaded" }),
    ).toBe(1);
    expect(sample(text, "switchyard_gateway_request_duration_seconds_count", { pool })).toBe(3);
    expect(sample(text, "switchyard_gateway_load_seconds_count", { pool })).toBe(2);
    expect(sample(text, "switchyard_gateway_inference_seconds_count", { pool })).toBe(3);
    // The fake agent reports 2 ms of inference each time: all three fall in the 2 ms bucket.
    expect(sample(text, "switchyard_gateway_inference_seconds_bucket", { pool, le: "0.001" })).toBe(0);
    expect(sample(text, "switchyard_gateway_inference_seconds_bucket", { pool, le: "0.002" })).toBe(3);
    expect(sample(text, "switchyard_gateway_inference_seconds_bucket", { pool, le: "+Inf" })).toBe(3);
    expect(sample(text, "switchyard_gateway_inference_seconds_sum", { pool })).toBeCloseTo(0.006, 6);
    agent.close();
  });

  it("counts the registry's writes, and keeps a replica's state once however many results bring it", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, { name: "a", replicas: [replicaState()] });
    const attachments = async () =>
      sample(await scrape(pool), "switchyard_gateway_registry_storage_writes_total", {
        pool,
        kind: "attachment",
      }) ?? Number.NaN;
    // The socket's first attachment (awaiting hello), then the agent's record after its hello.
    const joined = await attachments();
    expect(joined).toBeGreaterThanOrEqual(2);
    // Ten results in a row, each with a state that differs from the last (as a real agent's idle times and
    // timings do): the record is written once per PERSIST_DELAY_MS, not once per result.
    const started = Date.now();
    for (let run = 1; run <= 10; run += 1) {
      const state = replicaState({ loaded: ["m1"] });
      state.timings["m1:1"] = { inferMs: run, loads: 1, runs: run };
      await serve(agent, infer("m1", { pool }), { cache: run === 1 ? "miss" : "hit", state });
    }
    const elapsed = Date.now() - started;
    await new Promise((resolve) => setTimeout(resolve, PERSIST_DELAY_MS + 200));
    const written = (await attachments()) - joined;
    expect(written).toBeGreaterThanOrEqual(1);
    expect(written).toBeLessThanOrEqual(1 + Math.floor(elapsed / PERSIST_DELAY_MS));
    expect(written).toBeLessThan(10);
    agent.close();
  });

  it("counts a retry when a replica never started a request, and the queue while requests wait", async () => {
    const pool = freshPool();
    // Both hold the model, so each policy sends one request to each (no load to coalesce on).
    const a = await FakeAgent.connect(pool, { name: "a", replicas: [replicaState({ loaded: ["m"] })] });
    const b = await FakeAgent.connect(pool, { name: "b", replicas: [replicaState({ loaded: ["m"] })] });
    const first = infer("m", { pool });
    const second = infer("m", { pool });
    const third = infer("m", { pool });
    // Both replicas busy: the third waits in the registry's queue.
    const [one, two] = await Promise.all([a.nextInfer(), b.nextInfer()]);
    await expect
      .poll(async () => sample(await scrape(pool), "switchyard_gateway_queue_depth", { pool }))
      .toBe(1);
    expect(sample(await scrape(pool), "switchyard_gateway_in_flight", { pool })).toBe(2);
    a.fail(one, { status: 503, message: "busy loading", started: false });
    b.answer(two);
    // The refused request and the queued one go on to the two free replicas.
    await expect.poll(() => a.pendingInfers + b.pendingInfers).toBe(2);
    for (const agent of [a, b]) {
      while (agent.pendingInfers > 0) agent.answer(await agent.nextInfer());
    }
    expect((await Promise.all([first, second, third])).map((response) => response.status)).toEqual([
      200, 200, 200,
    ]);
    const text = await scrape(pool);
    expect(sample(text, "switchyard_gateway_retries_total", { pool })).toBe(1);
    expect(sample(text, "switchyard_gateway_queue_depth", { pool })).toBe(0);
    a.close();
    b.close();
  });

  it("keeps its counters across an eviction of the registry (they are written to storage)", async () => {
    const pool = freshPool();
    const agent = await FakeAgent.connect(pool, {
      name: "a",
      replicas: [replicaState({ maxConcurrency: 1 })],
    });
    await serve(agent, infer("m1", { pool }), { cache: "miss", state: replicaState({ loaded: ["m1"] }) });
    await expect
      .poll(
        () =>
          runInDurableObject(
            registry(pool),
            (_instance, state) => state.storage.kv.get(METRICS_STORAGE_KEY) !== undefined,
          ),
        { timeout: 5000 },
      )
      .toBe(true);

    await evictDurableObject(registry(pool));
    const text = await scrape(pool);
    expect(sample(text, "switchyard_gateway_requests_total", { pool, model: "m1", status: "200" })).toBe(1);
    // The rebuilt registry takes the agent's reported models as its baseline: nothing is loaded twice.
    expect(sample(text, "switchyard_gateway_model_loads_total", { pool, model: "m1" })).toBe(1);
    await serve(agent, infer("m1", { pool }), { cache: "hit", state: replicaState({ loaded: ["m1"] }) });
    const after = await scrape(pool);
    expect(sample(after, "switchyard_gateway_requests_total", { pool, model: "m1", status: "200" })).toBe(2);
    expect(sample(after, "switchyard_gateway_model_loads_total", { pool, model: "m1" })).toBe(1);
    agent.close();
  });
});

describe("the dashboard", () => {
  it("serves its page and scripts without a key, with a strict content security policy", async () => {
    const page = await gatewayFetch("/dashboard");
    expect(page.status).toBe(200);
    expect(page.headers.get("content-security-policy")).toContain("script-src 'self'");
    expect(await page.text()).toContain('src="/dashboard/assets/dashboard.js"');
    for (const asset of ["dashboard.js", "dashboard.css", "echarts.js"]) {
      const response = await gatewayFetch(`/dashboard/assets/${asset}`);
      expect(response.status).toBe(200);
      expect((await response.text()).length).toBeGreaterThan(1000);
    }
    expect((await gatewayFetch("/dashboard/assets/nope.js")).status).toBe(404);
  });

  it("answers its data only with the admin key: agents, replicas, models and recent traffic", async () => {
    const pool = freshPool();
    expect((await gatewayFetch(`/dashboard/api/pool?pool=${pool}`)).status).toBe(401);
    const forbidden = await gatewayFetch(`/dashboard/api/pool?pool=${pool}`, {
      headers: { Authorization: `Bearer ${CLIENT_KEY}` },
    });
    expect(forbidden.status).toBe(403);

    const agent = await FakeAgent.connect(pool, {
      name: "gpu-a",
      replicas: [replicaState({ maxConcurrency: 2 })],
    });
    await serve(agent, infer("m1", { pool }), {
      cache: "miss",
      state: replicaState({ loaded: ["m1"], loading: ["m2"] }),
    });
    await serve(agent, infer("m1", { pool }), {
      cache: "hit",
      state: replicaState({ loaded: ["m1"], loading: ["m2"] }),
    });
    const response = await gatewayFetch(`/dashboard/api/pool?pool=${pool}`, {
      headers: { Authorization: `Bearer ${ADMIN_KEY}` },
    });
    expect(response.status).toBe(200);
    const view = (await response.json()) as {
      pool: string;
      agents: Array<{
        name: string;
        replicas: Array<{ loaded: Array<{ name: string }>; loading: Array<{ name: string }> }>;
      }>;
      recent: {
        requests: number;
        hits: number;
        misses: number;
        hitRate: number;
        p50Ms: number;
        p99Ms: number;
      };
      series: Array<{ t: number; rate: number }>;
    };
    expect(view.pool).toBe(pool);
    expect(view.agents.map((entry) => entry.name)).toEqual(["gpu-a"]);
    expect(view.agents[0]?.replicas[0]?.loaded.map((model) => model.name)).toEqual(["m1"]);
    expect(view.agents[0]?.replicas[0]?.loading.map((model) => model.name)).toEqual(["m2"]);
    expect(view.recent).toMatchObject({ requests: 2, hits: 1, misses: 1, hitRate: 0.5 });
    expect(view.recent.p50Ms).toBeGreaterThan(0);
    expect(view.recent.p99Ms).toBeGreaterThanOrEqual(view.recent.p50Ms);
    expect(view.series).toHaveLength(90);
    expect(view.series.at(-1)?.rate).toBeGreaterThan(0);
    agent.close();
  });
});
