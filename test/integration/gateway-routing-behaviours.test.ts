import { readFileSync, rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { BIG_MODEL, MULTIPLEX_MODELS, repoModelPath } from "../fixtures/paths.ts";
import { type AgentOptions, type AgentProcess, startAgent } from "./harness/agents.ts";
import {
  buildLookupModel,
  copyOf,
  lookupRequest,
  repositoryWithCorrupt,
} from "./harness/behaviour-models.ts";
import { call, clientAuthorization, eventually, mlpRequest, waitForAgents } from "./harness/oip-client.ts";
import {
  describeOutcome,
  poolMetric,
  replicaOf,
  waitForMetric,
  withAgentFrozen,
} from "./harness/pool-probes.ts";
import { watchProcesses } from "./harness/processes-under-test.ts";
import { type GatewayProcess, SECRETS, SHARDED, startGateway } from "./harness/wrangler-dev.ts";

// Routing behaviours the workers tests check with their fake agent, here with a real `wrangler dev` and
// real agent processes made to behave as each test needs (flags, model repositories of their own, SIGSTOP
// and SIGTERM), each test in a pool of its own: hints, the queue's affinity, retries of loads that failed,
// draining agents, and the metrics an operator reads while this happens.

const [
  M0 = "m000",
  M1 = "m001",
  M2 = "m002",
  M3 = "m003",
  M4 = "m004",
  M5 = "m005",
  M6 = "m006",
  M7 = "m007",
] = MULTIPLEX_MODELS;
// The big MLP with this many rows runs for about three seconds on one CPU thread of a machine like CI's.
const SLOW_ROWS = 3000;

let gateway: GatewayProcess;
/** Every agent this file started: for the failure report, and stopped at the end (tests stop their own). */
const agents: AgentProcess[] = [];
/** Model repositories the tests wrote. */
const repositories: string[] = [];

beforeAll(async () => {
  gateway = await startGateway();
});

afterAll(() => {
  for (const dir of repositories) rmSync(dir, { recursive: true, force: true });
});

// Registered after the cleanup above, so it runs first: processes stop before their files go.
watchProcesses(() => ({ gateways: [gateway], agents }));

async function startIn(
  pool: string,
  name: string,
  options: Omit<AgentOptions, "gateway" | "name" | "pool"> = {},
): Promise<AgentProcess> {
  const agent = await startAgent({ gateway: gateway.wsUrl, name, pool, ...options });
  agents.push(agent);
  return agent;
}

const retries = (pool: string) => poolMetric(gateway.url, pool, "switchyard_gateway_retries_total");

describe("routing", () => {
  test("a runner hint (X-Runner-Hint, X-Fal-Runner-Hint, serve_multiplexed_model_id) picks the agent started with --hints naming it", async () => {
    const pool = "hints";
    const started = await Promise.all([
      startIn(pool, "a-plain", { args: ["--preload", M3] }),
      startIn(pool, "z-hinted", { args: ["--preload", M3, "--hints", "lora-7,lora-8"] }),
    ]);
    await waitForAgents(gateway.url, 2, pool);
    const send = (model: string, headers: Record<string, string> = {}) =>
      call(gateway.url, model, mlpRequest(1), { pool, headers }).then(describeOutcome);

    // Both hold the model and are idle: without a hint the tie goes by address, to the plain agent (in a
    // sharded pool, to the model's first shard holding it).
    const unhinted = await send(M3);
    expect(unhinted).toMatch(SHARDED ? /^200 (a-plain|z-hinted)\/0 hit$/ : /^200 a-plain\/0 hit$/);
    for (const header of ["X-Runner-Hint", "X-Fal-Runner-Hint", "serve_multiplexed_model_id"]) {
      expect(await send(M3, { [header]: "lora-7" }), header).toBe("200 z-hinted/0 hit");
    }
    // A hint nobody advertises changes nothing.
    expect(await send(M3, { "X-Runner-Hint": "lora-9" })).toBe(unhinted);
    // A model neither holds is loaded, among equal places, where the hint points.
    expect(await send(M4, { "X-Runner-Hint": "lora-8" })).toBe("200 z-hinted/0 miss");
    await Promise.all(started.map((agent) => agent.stop("SIGKILL")));
  });

  test("two agents started with the same --name both serve: the second gets an identity of its own", async () => {
    const pool = "twins";
    const first = await startIn(pool, "twin", { args: ["--preload", M5] });
    const second = await startIn(pool, "twin", { args: ["--preload", M6] });
    await waitForAgents(gateway.url, 2, pool);
    expect(second.process.output()).toMatch(/connected to the gateway agentId=twin~2 /);
    const send = (model: string) => call(gateway.url, model, mlpRequest(1), { pool }).then(describeOutcome);
    // Each model to the agent that holds it, by the identity the gateway gave it.
    expect(await send(M5)).toBe("200 twin/0 hit");
    expect(await send(M6)).toBe("200 twin~2/0 hit");
    // The first one leaving takes nothing of the second with it.
    await first.stop("SIGKILL");
    await waitForAgents(gateway.url, 1, pool);
    expect(await send(M6)).toBe("200 twin~2/0 hit");
    await second.stop("SIGKILL");
  });

  test("a freed slot takes the oldest request for a model its replica holds before older ones that need a load; the queue shows in /metrics", async () => {
    const pool = "affinity";
    const solo = await startIn(pool, "solo", { args: ["--max-concurrency", "1", "--preload", M0] });
    await waitForAgents(gateway.url, 1, pool);
    const send = (model: string, seed: number) =>
      call(gateway.url, model, mlpRequest(1, seed), { pool, headers: { "X-Request-Timeout": "60" } });

    // Frozen, the agent answers nothing: its one slot stays taken and everything after it waits in the
    // gateway's queue, in the order the test sends it.
    const queued: Array<ReturnType<typeof send>> = [];
    const { running } = await withAgentFrozen(solo, async () => {
      const first = send(M0, 1);
      await waitForMetric(gateway.url, pool, "switchyard_gateway_in_flight", 1);
      for (const [index, model] of [M1, M1, M0].entries()) {
        queued.push(send(model, index + 2));
        await waitForMetric(gateway.url, pool, "switchyard_gateway_queue_depth", index + 1);
      }
      expect(await poolMetric(gateway.url, pool, "switchyard_gateway_in_flight")).toBe(1);
      return { running: first };
    });
    expect(describeOutcome(await running)).toBe("200 solo/0 hit");
    const [older, old, newest] = await Promise.all(queued);
    // The newest request, for the model the replica holds, went first; then the others, oldest first, the
    // first of them loading their model.
    expect(
      [newest, older, old].map((outcome) => (outcome === undefined ? "" : describeOutcome(outcome))),
    ).toEqual(["200 solo/0 hit", "200 solo/0 miss", "200 solo/0 hit"]);
    // The newest was answered before both (a model load apart). The other two's order is the miss and the hit
    // above: the first loaded what the second found. Their answers can reach this client in one turn of its
    // loop, a tenth of a millisecond apart in either order, so their finish times cannot tell it.
    const [newestAt, olderAt, oldAt] = [newest, older, old].map((outcome) => outcome?.finishedAt ?? 0);
    expect(newestAt).toBeLessThan(olderAt ?? 0);
    expect(newestAt).toBeLessThan(oldAt ?? 0);
    expect(await poolMetric(gateway.url, pool, "switchyard_gateway_queue_depth")).toBe(0);
    await solo.stop("SIGKILL");
  });
});

describe("loads and runs that fail", () => {
  test("a load that fails on one agent is run on another; a 400 is not retried; a model that fails to load everywhere gets the actual error", async () => {
    const pool = "flaky";
    const lookup = { name: "lookup", bytes: buildLookupModel() };
    // "shaky" cannot load on the first agent and loads on the second; "rotten" loads nowhere.
    const flakyRepo = repositoryWithCorrupt("flaky", [lookup], ["shaky", "rotten"]);
    const steadyRepo = repositoryWithCorrupt("steady", [lookup, copyOf(M2, "shaky")], ["rotten"]);
    repositories.push(flakyRepo, steadyRepo);
    const started = await Promise.all([
      startIn(pool, "a-flaky", { models: flakyRepo }),
      startIn(pool, "b-steady", { models: steadyRepo }),
    ]);
    await waitForAgents(gateway.url, 2, pool);
    const send = (model: string, request = mlpRequest(1)) =>
      call(gateway.url, model, request, { pool, headers: { "X-Request-Timeout": "20" } });

    // Both idle, neither holds it: the load goes to the first by address, fails there (not started), and
    // the request is sent again to the other agent, which serves it. The client never sees the failure.
    // (In a sharded pool the first is the model's first shard: it may be the steady agent's.)
    const before = await retries(pool);
    expect(describeOutcome(await send("shaky"))).toBe("200 b-steady/0 miss");
    const afterShaky = await retries(pool);
    if (SHARDED) expect(afterShaky - before).toBeLessThanOrEqual(1);
    else expect(afterShaky).toBe(before + 1);
    await eventually(
      "the failed load counted",
      async () =>
        (await poolMetric(gateway.url, pool, "switchyard_gateway_model_load_failures_total", {
          model: "shaky",
        })) ===
        afterShaky - before,
    );

    // A run onnxruntime refuses (an index outside the table) is the request's fault on any replica: the
    // agent's 400 and its words reach the client, and nothing is retried.
    const refused = await send("lookup", lookupRequest(9));
    expect(describeOutcome(refused)).toMatch(
      /^400 model 'lookup' could not run on these inputs: .*out of data bounds/,
    );
    expect(replicaOf(refused)).toMatch(/^(a-flaky|b-steady)\/0$/);
    expect(await retries(pool)).toBe(afterShaky);
    const served = await send("lookup", lookupRequest(2));
    expect(served.ok && Array.from(served.result.response.outputs[0]?.data as Float32Array)).toEqual([30]);

    // Failed on every replica: still tried (three attempts in all), and the client gets the agent's own
    // error at once rather than a 504 at its deadline.
    const sentAt = performance.now();
    const rotten = await send("rotten");
    expect(describeOutcome(rotten)).toMatch(/^500 model "rotten:1" failed to load: /);
    expect(replicaOf(rotten)).toMatch(/^(a-flaky|b-steady)\/0$/);
    expect(rotten.finishedAt - sentAt).toBeLessThan(10_000);
    expect(await retries(pool)).toBe(afterShaky + 2);
    await Promise.all(started.map((agent) => agent.stop("SIGKILL")));
  });
});

describe("draining", () => {
  test("an agent that drains (SIGTERM) takes nothing new: a request for the model it holds goes to another agent, and is not retried", async () => {
    const pool = "drain";
    const [leaving] = await Promise.all([
      startIn(pool, "a-leaving", { args: ["--preload", BIG_MODEL] }),
      startIn(pool, "b-staying"),
    ]);
    if (leaving === undefined) throw new Error("no leaving agent");
    await waitForAgents(gateway.url, 2, pool);
    // Two runs of seconds each, one after the other: the agent has work in flight for a while.
    const slow = [1, 2].map((seed) =>
      call(gateway.url, BIG_MODEL, mlpRequest(SLOW_ROWS, seed), { pool, binaryInputs: true }),
    );
    await waitForMetric(gateway.url, pool, "switchyard_gateway_in_flight", 2);

    const pid = leaving.process.child.pid;
    if (pid === undefined) throw new Error("no agent pid");
    process.kill(pid, "SIGTERM");
    await leaving.process.waitForOutput(/draining/, 10_000);
    // Readiness counts serving agents: the gateway has seen the drain.
    await waitForAgents(gateway.url, 1, pool);
    const before = await retries(pool);
    // Held still with its requests in flight, the draining agent stays connected for as long as this takes.
    const probe = await withAgentFrozen(leaving, async () => {
      const answered = await call(gateway.url, BIG_MODEL, mlpRequest(1), {
        pool,
        // Sent to the frozen agent by mistake, it would wait here until this deadline.
        headers: { "X-Request-Timeout": "10" },
      });
      expect(leaving.process.child.exitCode).toBeNull();
      return answered;
    });
    expect(describeOutcome(probe)).toBe("200 b-staying/0 miss");
    // Never offered to the draining agent, so never refused there and sent again.
    expect(await retries(pool)).toBe(before);
    expect((await Promise.all(slow)).map(describeOutcome)).toEqual(Array(2).fill("200 a-leaving/0 hit"));
    expect(await leaving.process.exited).toBe(0);
  });
});

describe("models an operator watches", () => {
  const pool = "evict";

  beforeAll(async () => {
    await startIn(pool, "lru", { args: ["--max-models", "1"] });
    await waitForAgents(gateway.url, 1, pool);
  });

  test("/metrics counts the loads and evictions of an agent with room for one model, what is loaded now, and the agent's connection", async () => {
    for (const model of [M0, M1])
      expect(describeOutcome(await call(gateway.url, model, mlpRequest(1), { pool }))).toBe("200 lru/0 miss");
    const metric = (name: string, labels: Record<string, string> = {}) =>
      poolMetric(gateway.url, pool, name, labels);
    expect(await metric("switchyard_gateway_model_loads_total", { model: M0 })).toBe(1);
    expect(await metric("switchyard_gateway_model_loads_total", { model: M1 })).toBe(1);
    expect(await metric("switchyard_gateway_model_evictions_total", { model: M0 })).toBe(1);
    expect(await metric("switchyard_gateway_model_evictions_total", { model: M1 })).toBe(0);
    expect(
      await metric("switchyard_gateway_model_replicas", { model: M1, version: "1", state: "loaded" }),
    ).toBe(1);
    expect(
      await metric("switchyard_gateway_model_replicas", { model: M0, version: "1", state: "loaded" }),
    ).toBe(0);
    expect(await metric("switchyard_gateway_agent_connections_total")).toBe(1);
    expect(await metric("switchyard_gateway_requests_total", { model: M0, status: "200" })).toBe(1);
  });

  test("a model in the gateway's repository that no connected agent can load is described, but not ready, and says why", async () => {
    const admin = { Authorization: `Bearer ${SECRETS.adminKey}` };
    const uploaded = await fetch(`${gateway.url}/admin/models/r2only/1`, {
      method: "PUT",
      headers: admin,
      body: readFileSync(repoModelPath(M7)),
    });
    expect(uploaded.status).toBe(201);
    const get = async (path: string, inPool: string) => {
      const response = await fetch(`${gateway.url}${path}`, {
        headers: { ...clientAuthorization, "X-Switchyard-Pool": inPool },
      });
      return { status: response.status, body: (await response.json()) as Record<string, unknown> };
    };
    // Described from what was kept at upload, in any pool.
    expect(await get("/v2/models/r2only", pool)).toMatchObject({
      status: 200,
      body: { name: "r2only", versions: ["1"] },
    });
    // This pool's agent serves its own directory only.
    const notHere = await get("/v2/models/r2only/versions/1/ready", pool);
    expect(notHere.status).toBe(400);
    expect(notHere.body.error).toMatch(
      /^model 'r2only' version 1 is not ready: no connected agent can load it/,
    );
    expect(await get("/v2/models/r2only/ready", "empty")).toEqual({
      status: 400,
      body: { error: "model 'r2only' version 1 is not ready: no agent is connected" },
    });
    // A model the agent has is ready.
    expect((await get(`/v2/models/${M2}/ready`, pool)).status).toBe(200);
  });
});
