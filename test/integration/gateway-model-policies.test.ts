import { readFileSync } from "node:fs";
import { beforeAll, describe, expect, test } from "vitest";
import { freePort } from "../../scripts/lib/free-port.ts";
import { BIG_MODEL, MULTIPLEX_MODELS, repoModelPath } from "../fixtures/paths.ts";
import { sample } from "../support/prometheus-text.ts";
import { type AgentProcess, startAgent } from "./harness/agents.ts";
import { call, eventually, mlpRequest, sleep, waitForAgents } from "./harness/oip-client.ts";
import { poolMetric } from "./harness/pool-probes.ts";
import { watchProcesses } from "./harness/processes-under-test.ts";
import { type GatewayProcess, SECRETS, startGateway } from "./harness/wrangler-dev.ts";

// A model's serving policy (PUT /admin/models/{m}/policy) with a real `wrangler dev` and real agents: a cap
// on copies that holds under a burst (counted from the agents' own metrics), changed without a restart; and
// pinned copies (min_copies) that outlive LRU pressure and their holder's death.

const POOL = "policies";
const [PINNED = "m000", ...OTHERS] = MULTIPLEX_MODELS;
// The big MLP with this many rows keeps a replica busy for a few hundred ms on one CPU thread.
const SLOW_ROWS = 600;

let gateway: GatewayProcess;
const agents: Array<AgentProcess & { metricsPort: number }> = [];

beforeAll(async () => {
  // The baseline policy loads a model on any idle replica when its holders are busy: without a cap, a burst
  // makes as many copies as there are agents, so the cap is what keeps them down. A short grace: a dead
  // holder's pinned copies are placed again 2 s after it left.
  gateway = await startGateway({ vars: { ROUTING_POLICY: "baseline", AGENT_GRACE_SECONDS: "2" } });
  for (const name of ["pol-a", "pol-b", "pol-c"]) {
    const metricsPort = await freePort();
    const agent = await startAgent({
      gateway: gateway.wsUrl,
      name,
      pool: POOL,
      args: ["--max-concurrency", "1", "--max-models", "2", "--metrics-port", String(metricsPort)],
    });
    agents.push(Object.assign(agent, { metricsPort }));
  }
  await waitForAgents(gateway.url, 3, POOL);
});

watchProcesses(() => ({ gateways: [gateway], agents }), "SIGTERM");

async function setPolicy(model: string, policy: object): Promise<Record<string, unknown>> {
  const response = await fetch(`${gateway.url}/admin/models/${model}/policy`, {
    method: "PUT",
    headers: { Authorization: `Bearer ${SECRETS.adminKey}`, "X-Switchyard-Pool": POOL },
    body: JSON.stringify(policy),
  });
  const body = (await response.json()) as Record<string, unknown>;
  expect(response.status, JSON.stringify(body)).toBe(200);
  return body;
}

/** What the living agents' own /metrics say: the sum over them of a model's counter. */
async function agentsCount(name: string, model: string): Promise<number> {
  let total = 0;
  for (const agent of agents.filter((each) => each.process.child.exitCode === null)) {
    const text = await (await fetch(`http://127.0.0.1:${agent.metricsPort}/metrics`)).text();
    total += sample(text, name, { replica: "0", model }) ?? 0;
  }
  return total;
}

/** Agents whose replica holds the model now, by their reports through the gateway. */
async function holders(model: string): Promise<string[]> {
  const response = await fetch(`${gateway.url}/dashboard/api/pool`, {
    headers: { Authorization: `Bearer ${SECRETS.adminKey}`, "X-Switchyard-Pool": POOL },
  });
  const view = (await response.json()) as {
    agents: Array<{ id: string; replicas: Array<{ loaded: Array<{ name: string }> }> }>;
  };
  return view.agents
    .filter((agent) => agent.replicas.some((replica) => replica.loaded.some((each) => each.name === model)))
    .map((agent) => agent.id);
}

async function burst(count: number): Promise<void> {
  const outcomes = await Promise.all(
    Array.from({ length: count }, (_, index) =>
      call(gateway.url, BIG_MODEL, mlpRequest(SLOW_ROWS, index), { pool: POOL, binaryInputs: true }),
    ),
  );
  for (const outcome of outcomes) expect(outcome.ok ? 200 : `${outcome.status} ${outcome.message}`).toBe(200);
}

describe("max_copies", () => {
  test("a burst never makes more copies than max_copies (the agents' own load counts); raising it takes effect at once", async () => {
    await setPolicy(BIG_MODEL, { max_copies: 1 });
    await burst(6);
    expect(await agentsCount("switchyard_agent_model_loads_total", BIG_MODEL)).toBe(1);

    expect(await setPolicy(BIG_MODEL, { max_copies: 2 })).toMatchObject({ max_copies: 2, copies: 1 });
    await burst(6);
    expect(await agentsCount("switchyard_agent_model_loads_total", BIG_MODEL)).toBe(2);

    // Without a cap, the same burst loads it on the third agent too.
    await setPolicy(BIG_MODEL, { max_copies: null });
    await burst(6);
    expect(await agentsCount("switchyard_agent_model_loads_total", BIG_MODEL)).toBe(3);
  });
});

describe("min_copies", () => {
  test("pinned copies stay loaded under LRU pressure, are placed again after their holder's SIGKILL, and unpinning keeps them loaded", async () => {
    expect(await setPolicy(PINNED, { min_copies: 1 })).toMatchObject({ min_copies: 1, copies: 1 });
    const [holder] = await holders(PINNED);
    expect(holder).toBeDefined();
    // Every other model, twice over: the agents' two model slots churn, the pinned copy stays.
    for (const model of [...OTHERS, ...OTHERS]) {
      const outcome = await call(gateway.url, model, mlpRequest(1), { pool: POOL });
      expect(outcome.ok ? 200 : `${outcome.status} ${outcome.message}`).toBe(200);
    }
    expect(await holders(PINNED)).toEqual([holder]);
    expect(await agentsCount("switchyard_agent_model_evictions_total", PINNED)).toBe(0);
    // Wanted and placed, as /metrics says.
    expect(
      await poolMetric(gateway.url, POOL, "switchyard_gateway_model_min_copies", { model: PINNED }),
    ).toBe(1);
    expect(
      await poolMetric(gateway.url, POOL, "switchyard_gateway_model_pinned_replicas", {
        model: PINNED,
        version: "1",
      }),
    ).toBe(1);

    await agents.find((agent) => agent.name === holder)?.stop("SIGKILL");
    await eventually("the pinned copy placed again on another agent", async () => {
      const now = await holders(PINNED);
      return now.length === 1 && now[0] !== holder;
    });

    const unpinned = await setPolicy(PINNED, { min_copies: 0 });
    expect(unpinned).toMatchObject({ min_copies: 0, copies: 1 });
  });
});

describe("keep_alive_s", () => {
  test("set at run time, idle copies unload on time on the agents already there; DELETE gives them back their own", async () => {
    const model = OTHERS[0] ?? "m001";
    const served = await call(gateway.url, model, mlpRequest(1), { pool: POOL });
    expect(served.ok).toBe(true);
    expect(await holders(model)).toHaveLength(1);
    const setAt = performance.now();
    expect(await setPolicy(model, { keep_alive_s: 1 })).toMatchObject({ keep_alive_s: 1 });
    await eventually("the idle copy unloaded", async () => (await holders(model)).length === 0);
    // Idle since before the PUT: unloaded a second after its last use, give or take a report.
    expect(performance.now() - setAt).toBeLessThan(5_000);

    const cleared = await fetch(`${gateway.url}/admin/models/${model}/policy`, {
      method: "DELETE",
      headers: { Authorization: `Bearer ${SECRETS.adminKey}`, "X-Switchyard-Pool": POOL },
    });
    expect(await cleared.json()).toMatchObject({ keep_alive_s: null });
    // The agents' own keep-alive again (never): a new copy stays.
    await call(gateway.url, model, mlpRequest(1), { pool: POOL });
    await sleep(2_000);
    expect(await holders(model)).toHaveLength(1);
  });
});

describe("a model's config.json", () => {
  test("its min_copies is pinned when an agent taking its models from the gateway joins, and its max_copies applies", async () => {
    const pool = "config-policies";
    const model = "cfgpinned";
    const admin = { Authorization: `Bearer ${SECRETS.adminKey}` };
    const put = (path: string, body: string | Uint8Array) =>
      fetch(`${gateway.url}${path}`, { method: "PUT", headers: admin, body });
    expect((await put(`/admin/models/${model}/1`, readFileSync(repoModelPath(PINNED)))).status).toBe(201);
    expect(
      (
        await put(
          `/admin/models/${model}/1?file=config.json`,
          JSON.stringify({ min_copies: 1, max_copies: 1 }),
        )
      ).status,
    ).toBe(201);
    // Agents that take their models from the gateway's repository, where the config.json is.
    const joined = await startAgent({ gateway: gateway.wsUrl, name: "cfg-a", pool, models: null });
    agents.push(Object.assign(joined, { metricsPort: 0 }));
    await waitForAgents(gateway.url, 1, pool);
    await eventually("config.json's min_copies pinned on the agent that joined", async () => {
      const policy = await getPolicy(pool, model);
      return policy.min_copies === 1 && policy.copies === 1;
    });
    expect(await getPolicy(pool, model)).toMatchObject({
      max_copies: 1,
      config: { min_copies: 1, max_copies: 1 },
    });
  });
});

async function getPolicy(pool: string, model: string): Promise<Record<string, unknown>> {
  const response = await fetch(`${gateway.url}/admin/models/${model}/policy`, {
    headers: { Authorization: `Bearer ${SECRETS.adminKey}`, "X-Switchyard-Pool": pool },
  });
  expect(response.status).toBe(200);
  return (await response.json()) as Record<string, unknown>;
}
