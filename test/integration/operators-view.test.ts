import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, test } from "vitest";
import { LOCAL_TRACES } from "../../scripts/lib/wrangler-dev.ts";
import { QueueClient } from "../../shared/queue/queue-client.ts";
import { MULTIPLEX_MODELS } from "../fixtures/paths.ts";
import { sample } from "../support/prometheus-text.ts";
import { type AgentProcess, startAgent } from "./harness/agents.ts";
import { call, eventually, mlpRequest, waitForAgents } from "./harness/oip-client.ts";
import { watchProcesses } from "./harness/processes-under-test.ts";
import { type GatewayProcess, REPO_ROOT, SECRETS, startGateway } from "./harness/wrangler-dev.ts";
import { launchBrowser } from "./support/browser.ts";
import { checkMetrics } from "./support/promtool.ts";

// What an operator sees of a running system: the gateway's /metrics and the agent's --metrics-port, both
// read by Prometheus' own promtool, and the dashboard page in a real (headless) Chromium. Real wrangler dev,
// a real agent on the CPU, real requests.

const METRICS_TOKEN = "local-metrics-token";
const ARTIFACTS = join(REPO_ROOT, "test-results");
const [FIRST = "m000", SECOND = "m001", THIRD = "m002"] = MULTIPLEX_MODELS;

let gateway: GatewayProcess;
let agent: AgentProcess;
let agentMetricsUrl: string;

beforeAll(async () => {
  gateway = await startGateway({ vars: { METRICS_TOKEN } });
  agent = await startAgent({ gateway: gateway.wsUrl, name: "ops-agent", args: ["--metrics-port", "0"] });
  agentMetricsUrl = (await agent.process.waitForOutput(/metrics listening url=(\S+)/, 10_000))[1] ?? "";
  await waitForAgents(gateway.url, 1);
});

watchProcesses(() => ({ gateways: [gateway], agents: [agent] }), "SIGTERM");

async function scrapeGateway(key = METRICS_TOKEN): Promise<string> {
  const response = await fetch(`${gateway.url}/metrics`, { headers: { Authorization: `Bearer ${key}` } });
  expect(response.status).toBe(200);
  return response.text();
}

async function scrapeAgent(): Promise<string> {
  const response = await fetch(agentMetricsUrl);
  expect(response.status).toBe(200);
  return response.text();
}

async function serve(model: string, times: number): Promise<void> {
  for (let index = 0; index < times; index++) {
    const outcome = await call(gateway.url, model, mlpRequest(1, index));
    expect(outcome.ok ? "ok" : `${outcome.status} ${outcome.message}`).toBe("ok");
  }
}

describe("metrics", () => {
  test("both scrapes pass promtool, and their figures move as requests flow", async () => {
    const [gatewayBefore, agentBefore] = await Promise.all([scrapeGateway(), scrapeAgent()]);
    for (const text of [gatewayBefore, agentBefore]) {
      const checked = await checkMetrics(text);
      expect(checked.output).toBe("");
      expect(checked.code).toBe(0);
    }
    const gatewayCount = (text: string, name: string, labels: Record<string, string>) =>
      sample(text, name, { pool: "default", ...labels }) ?? 0;
    const agentCount = (text: string, name: string, labels: Record<string, string> = {}) =>
      sample(text, name, labels) ?? 0;

    await serve(FIRST, 5);
    await serve(SECOND, 2);

    // The registry counts a direct hit when its relay's batch arrives, within a second (docs/scaling.md).
    let gatewayAfter = gatewayBefore;
    const moved = (name: string, labels: Record<string, string>) =>
      gatewayCount(gatewayAfter, name, labels) - gatewayCount(gatewayBefore, name, labels);
    await eventually("the gateway counts the seven requests", async () => {
      gatewayAfter = await scrapeGateway();
      return moved("switchyard_gateway_request_duration_seconds_count", {}) >= 7;
    });
    const agentAfter = await scrapeAgent();
    for (const text of [gatewayAfter, agentAfter]) expect((await checkMetrics(text)).code).toBe(0);

    expect(moved("switchyard_gateway_requests_total", { model: FIRST, status: "200" })).toBe(5);
    expect(moved("switchyard_gateway_requests_total", { model: SECOND, status: "200" })).toBe(2);
    // Each model loads on its first request; the others hit.
    expect(moved("switchyard_gateway_cache_misses_total", { model: FIRST })).toBe(1);
    expect(moved("switchyard_gateway_cache_hits_total", { model: FIRST })).toBe(4);
    expect(moved("switchyard_gateway_request_duration_seconds_count", {})).toBe(7);
    expect(moved("switchyard_gateway_inference_seconds_count", {})).toBe(7);
    expect(moved("switchyard_gateway_load_seconds_count", {})).toBe(2);
    expect(gatewayCount(gatewayAfter, "switchyard_gateway_agents", { state: "serving" })).toBe(1);
    expect(gatewayCount(gatewayAfter, "switchyard_gateway_replicas", { device: "cpu" })).toBe(1);
    // The registry's writes: the agent's socket and its record at hello, at least; per request far less
    // than one (replica states are kept at most once a second, docs/scaling.md).
    const writes = (text: string, kind: string) =>
      gatewayCount(text, "switchyard_gateway_registry_storage_writes_total", { kind });
    expect(writes(gatewayBefore, "attachment")).toBeGreaterThanOrEqual(2);
    expect(writes(gatewayAfter, "attachment") - writes(gatewayBefore, "attachment")).toBeLessThan(7);
    expect(
      sample(gatewayAfter, "switchyard_gateway_registry_storage_writes_total", {
        pool: "default",
        kind: "kv",
      }),
    ).toBeDefined();
    await eventually("the gateway counts the loads the agent reported", async () => {
      const text = await scrapeGateway();
      return gatewayCount(text, "switchyard_gateway_model_loads_total", { model: SECOND }) === 1;
    });

    const agentMoved = (name: string, labels: Record<string, string>) =>
      agentCount(agentAfter, name, labels) - agentCount(agentBefore, name, labels);
    expect(agentMoved("switchyard_agent_requests_total", { replica: "0", model: FIRST, status: "200" })).toBe(
      5,
    );
    expect(agentMoved("switchyard_agent_cache_misses_total", { replica: "0", model: SECOND })).toBe(1);
    expect(agentMoved("switchyard_agent_model_loads_total", { replica: "0", model: FIRST })).toBe(1);
    expect(agentMoved("switchyard_agent_model_runs_total", { replica: "0", model: FIRST })).toBe(5);
    expect(agentMoved("switchyard_agent_model_load_duration_seconds_count", { replica: "0" })).toBe(2);
    expect(agentMoved("switchyard_agent_batch_requests_count", { replica: "0" })).toBe(7);
    expect(
      agentCount(agentAfter, "switchyard_agent_replica_models_loaded", { replica: "0", device: "cpu" }),
    ).toBe(2);
    expect(
      agentCount(agentAfter, "switchyard_agent_replica_memory_used_bytes", { replica: "0", device: "cpu" }),
    ).toBeGreaterThan(0);
  });

  test("the gateway's /metrics takes the admin key or METRICS_TOKEN, nothing else, and never shows a secret", async () => {
    expect((await fetch(`${gateway.url}/metrics`)).status).toBe(401);
    const client = await fetch(`${gateway.url}/metrics`, {
      headers: { Authorization: `Bearer ${SECRETS.apiKey}` },
    });
    expect(client.status).toBe(403);
    const text = await scrapeGateway(SECRETS.adminKey);
    for (const secret of [SECRETS.apiKey, SECRETS.agentToken, SECRETS.adminKey, METRICS_TOKEN]) {
      expect(text).not.toContain(secret);
      expect(await scrapeAgent()).not.toContain(secret);
    }
  });
});

describe("dashboard", () => {
  test("shows the agent, its replica and the models it loaded, live, in headless Chromium", async () => {
    // Two models loaded before the page opens; a third while it watches.
    await serve(FIRST, 2);
    await serve(SECOND, 2);
    const browser = await launchBrowser();
    const problems: string[] = [];
    try {
      const page = await browser.context.newPage();
      page.on("console", (message) => {
        if (message.type() === "error") problems.push(message.text());
      });
      page.on("pageerror", (error) => problems.push(error.message));
      await page.goto(`${gateway.url}/dashboard`);

      // No key yet: the page asks for one, and a wrong one is refused with the gateway's reason.
      await page.locator("#key-input").fill(SECRETS.apiKey);
      await page.locator("#sign-in-form button[type=submit]").click();
      await expect
        .poll(() => page.locator("#sign-in-error").textContent(), { timeout: 10_000 })
        .toContain("not valid for metrics");

      await page.locator("#key-input").fill(SECRETS.adminKey);
      await page.locator("#sign-in-form button[type=submit]").click();
      const card = page.locator('.agent[data-agent="ops-agent"]');
      await card.waitFor({ timeout: 15_000 });
      expect(await card.locator(".agent-name").textContent()).toBe("ops-agent");
      expect(await card.locator(".badge.device").first().textContent()).toBe("cpu");

      // Traffic while the page polls: a new model shows up on the replica, and the tiles count it.
      await serve(THIRD, 6);
      await card.locator(`.chip.model[data-model="${THIRD}"]`).waitFor({ timeout: 10_000 });
      for (const model of [FIRST, SECOND]) {
        expect(await card.locator(`.chip.model[data-model="${model}"]`).count()).toBe(1);
      }
      await expect
        .poll(() => page.locator("#tile-hits .value").textContent(), { timeout: 10_000 })
        .toMatch(/%$/);
      await expect
        .poll(() => page.locator("#tile-p99 .value").textContent(), { timeout: 10_000 })
        .toMatch(/ms|s$/);
      expect(await page.locator("#status-text").textContent()).toContain("live");
      expect(await page.locator("#chart-traffic canvas").count()).toBeGreaterThan(0);

      // A serving policy set meanwhile shows in its own table, and in /metrics (which promtool still reads).
      const policy = await fetch(`${gateway.url}/admin/models/${FIRST}/policy`, {
        method: "PUT",
        headers: { Authorization: `Bearer ${SECRETS.adminKey}` },
        body: JSON.stringify({ max_copies: 2 }),
      });
      expect(policy.status).toBe(200);
      const row = page.locator(`#policies tr[data-model="${FIRST}"]`);
      await row.waitFor({ timeout: 10_000 });
      expect(await row.locator("td").allTextContents()).toEqual([FIRST, "0", "2", "1"]);
      const text = await scrapeGateway();
      expect((await checkMetrics(text)).code).toBe(0);
      expect(sample(text, "switchyard_gateway_model_max_copies", { pool: "default", model: FIRST })).toBe(2);

      // Managed-queue requests show in their own section once the pool has had any, and in /metrics.
      const queue = new QueueClient({ baseUrl: gateway.url, apiKey: SECRETS.apiKey });
      for (let seed = 0; seed < 3; seed += 1) await queue.subscribe(SECOND, mlpRequest(1, seed));
      await page.locator("#async-section").waitFor({ timeout: 10_000 });
      await expect
        .poll(() => page.locator("#async-summary").textContent(), { timeout: 10_000 })
        .toContain("3 completed");
      const afterQueue = await scrapeGateway();
      expect((await checkMetrics(afterQueue)).code).toBe(0);
      expect(
        sample(afterQueue, "switchyard_gateway_queue_async_events_total", {
          pool: "default",
          event: "completed",
        }),
      ).toBe(3);

      // Keep sending while the charts draw, then keep a picture of the page for people to look at.
      await Promise.all([serve(FIRST, 6), serve(SECOND, 4)]);
      await page.waitForTimeout(2_500);
      mkdirSync(ARTIFACTS, { recursive: true });
      await page.screenshot({ path: join(ARTIFACTS, "dashboard.png"), fullPage: true });
      expect(problems).toEqual([
        // The refused key of the first attempt is a 403 the browser reports on its console.
        expect.stringContaining("403"),
      ]);
    } finally {
      await browser.close();
    }
  });
});

describe("wrangler dev as the project starts it", () => {
  test("stores no local traces unless X_LOCAL_OBSERVABILITY asks for them", async () => {
    // wrangler's trace collector stores every event of the Worker and its objects, which costs a tiny request
    // most of workerd's CPU (scripts/lib/wrangler-dev.ts): off, its query API says it is not enabled.
    await serve(FIRST, 1);
    const response = await fetch(`${gateway.url}/cdn-cgi/local/explorer/api/local/observability/query`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ sql: "SELECT count(*) FROM spans" }),
    });
    const answer = (await response.json()) as {
      errors: { code: number }[];
      result: { rows: number[][] } | null;
    };
    if (LOCAL_TRACES === "true") {
      expect(response.status).toBe(200);
      expect(answer.result?.rows[0]?.[0]).toBeGreaterThan(0);
    } else {
      expect(response.status).toBe(404);
      // wrangler's "Local observability is not enabled for this dev session."
      expect(answer.errors.map((error) => error.code)).toEqual([10130]);
    }
  });
});
