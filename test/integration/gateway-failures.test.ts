import { beforeAll, describe, expect, test } from "vitest";
import { BIG_MODEL, MULTIPLEX_MODELS } from "../fixtures/paths.ts";
import { type AgentProcess, startAgent } from "./harness/agents.ts";
import {
  AFTER_RESTART_MS,
  call,
  eventually,
  mlpRequest,
  type Outcome,
  sleep,
  statusOf,
  waitForAgents,
} from "./harness/oip-client.ts";
import { waitForMetric, withAgentFrozen } from "./harness/pool-probes.ts";
import { watchProcesses } from "./harness/processes-under-test.ts";
import { type GatewayProcess, startGateway } from "./harness/wrangler-dev.ts";

// Overload, deadlines, and parts that fail: a real `wrangler dev` with a queue of 2 and 2 s heartbeats, and
// real agents, each test in a pool of its own so that one test's agents never serve another's requests.

let gateway: GatewayProcess;
const agents = new Map<string, AgentProcess>();

/** One request at a time, the slow model already loaded: "busy" is easy to arrange. */
const ONE_AT_A_TIME = ["--max-concurrency", "1", "--preload", BIG_MODEL];
// A request of the big MLP with this many rows runs for about three seconds on one CPU thread of a machine
// like CI's: long enough to be killed or drained mid-run.
const SLOW_ROWS = 3000;
const slow = (pool: string, seed = 1, headers: Record<string, string> = {}) =>
  call(gateway.url, BIG_MODEL, mlpRequest(SLOW_ROWS, seed), { pool, binaryInputs: true, headers });
const quick = (pool: string, headers: Record<string, string> = {}) =>
  call(gateway.url, MULTIPLEX_MODELS[0] ?? "", mlpRequest(1), { pool, headers });

async function agentIn(
  pool: string,
  name: string,
  args: readonly string[] = ONE_AT_A_TIME,
): Promise<AgentProcess> {
  const agent = await startAgent({ gateway: gateway.wsUrl, name, pool, args });
  agents.set(name, agent);
  await waitForAgents(gateway.url, 1, pool);
  return agent;
}

/**
 * The gateway drops an agent silent for three heartbeats (6 s here, counted from its last ping): what a test
 * waits for while its agent is frozen must come well within that.
 */
const WHILE_FROZEN_MS = 2_000;

/**
 * Runs `meanwhile` while the pool's one agent holds its one slot: the agent frozen first, then a slow request
 * sent, which the gateway grants (in flight) and the agent holds unread in its socket's buffer, so the slot
 * stays taken however fast or loaded the machine (a fixed head start once let the run end too soon or the
 * next request overtake it). Resolves to that request's outcome once the agent, thawed, has served it.
 */
async function whileSlotTaken(pool: string, meanwhile: () => Promise<void>): Promise<Outcome> {
  // The pools these tests take a slot in have one agent each, named after the pool.
  const holder = agents.get(pool);
  if (holder === undefined) throw new Error(`no agent named ${pool}`);
  const { held } = await withAgentFrozen(holder, async () => {
    const sent = slow(pool);
    await waitForMetric(gateway.url, pool, "switchyard_gateway_in_flight", 1, {}, WHILE_FROZEN_MS);
    await meanwhile();
    return { held: sent };
  });
  return await held;
}

beforeAll(async () => {
  gateway = await startGateway({ vars: { QUEUE_LIMIT: "2", HEARTBEAT_SECONDS: "2" } });
  await Promise.all([
    // Its log says in which order it served its requests.
    agentIn("busy", "busy", [...ONE_AT_A_TIME, "--log-requests"]),
    agentIn("fragile", "victim"),
    agentIn("drain", "drainer"),
    agentIn("steady", "steady", []),
  ]);
});

watchProcesses(() => ({ gateways: [gateway], agents: agents.values() }));

function expectStatus(outcome: Outcome, status: number): void {
  expect(outcome.ok ? 200 : `${outcome.status} ${outcome.message}`).toSatisfy(
    (actual: number | string) => actual === status || String(actual).startsWith(`${status} `),
  );
}

describe("capacity and deadlines", () => {
  test("no agent in the pool: 503 with Retry-After, and the pool is not ready", async () => {
    const outcome = await quick("nobody");
    expectStatus(outcome, 503);
    if (outcome.ok) return;
    expect(outcome.message).toMatch(/no agent/);
    expect(outcome.headers.get("retry-after")).toMatch(/^\d+$/);
    expect(await statusOf(gateway.url, "/v2/health/ready", "nobody")).toBe(503);
  });

  test("a full queue answers 429 with Retry-After at once; the requests that waited are served in order", async () => {
    const waiting: Array<Promise<Outcome>> = [];
    const held = await whileSlotTaken("busy", async () => {
      for (const depth of [1, 2]) {
        waiting.push(quick("busy"));
        await waitForMetric(
          gateway.url,
          "busy",
          "switchyard_gateway_queue_depth",
          depth,
          {},
          WHILE_FROZEN_MS,
        );
      }
      const sentAt = performance.now();
      const refused = await quick("busy");
      expectStatus(refused, 429);
      if (!refused.ok) expect(refused.headers.get("retry-after")).toMatch(/^\d+$/);
      // At once: held instead, it would wait for a slot the frozen agent never frees.
      expect(refused.finishedAt - sentAt).toBeLessThan(3_000);
    });

    const served = [held, ...(await Promise.all(waiting))];
    for (const outcome of served) expectStatus(outcome, 200);
    // In the order they waited, as the agent (one at a time) logged them: not the order their answers reached
    // the client, which two quick answers can reach in either order however they were served.
    const ids = served
      .slice(1)
      .map(
        (outcome) => (outcome.ok ? outcome.result.headers : outcome.headers).get("x-request-id") ?? "none",
      );
    const busy = agents.get("busy");
    await busy?.process.waitForOutput(new RegExp(`requestId=${ids[1]}\\b`), 5_000);
    const log = busy?.process.output() ?? "";
    const servedAt = (index: number) => log.search(new RegExp(`requestId=${ids[index - 1]}\\b`));
    expect(servedAt(1)).toBeGreaterThanOrEqual(0);
    expect(servedAt(1)).toBeLessThan(servedAt(2));
  });

  test("a request still waiting at its deadline (X-Request-Timeout) gets 504 then, not later", async () => {
    const held = await whileSlotTaken("busy", async () => {
      const sentAt = performance.now();
      const late = await quick("busy", { "X-Request-Timeout": "0.3" });
      expectStatus(late, 504);
      // Then: later, it would wait for a slot the frozen agent never frees.
      expect(late.finishedAt - sentAt).toBeLessThan(3_000);
    });
    expectStatus(held, 200);
  });

  test("a request still running at its deadline gets 504, and the replica serves again once it is done", async () => {
    const sentAt = performance.now();
    // A tenth of a second: the slow run takes seconds here, but a few tenths where onnxruntime has more
    // threads, and a longer deadline was once met there (at 301 ms).
    const overdue = await call(gateway.url, BIG_MODEL, mlpRequest(SLOW_ROWS), {
      pool: "busy",
      binaryInputs: true,
      headers: { "X-Request-Timeout": "0.1" },
    });
    expectStatus(overdue, 504);
    expect(overdue.finishedAt - sentAt).toBeLessThan(1_500);
    // The agent answers the cancelled request when its run ends; the slot is free again after that.
    const next = await quick("busy", { "X-Request-Timeout": "20" });
    expectStatus(next, 200);
  });
});

describe("agents that go away", () => {
  test("an agent killed mid-request: its request runs again on the agent that replaces it, the queued one too", async () => {
    const victim = agents.get("victim");
    if (victim === undefined) throw new Error("no victim agent");
    const running = slow("fragile", 1);
    await sleep(150);
    const queued = quick("fragile", { "X-Request-Timeout": "60" });
    await sleep(150);
    await victim.stop("SIGKILL");

    // The pool's only agent is gone but was there a moment ago: both requests wait for an agent.
    await agentIn("fragile", "rescuer", []);
    for (const outcome of await Promise.all([running, queued])) {
      expectStatus(outcome, 200);
      if (outcome.ok) expect(outcome.result.headers.get("x-switchyard-replica")).toBe("rescuer/0");
    }
  });

  test("SIGTERM drains: the request in flight completes, new ones wait for the agent that takes over, exit 0", async () => {
    const drainer = agents.get("drainer");
    if (drainer === undefined) throw new Error("no drainer agent");
    const running = slow("drain", 1);
    await sleep(200);
    const exitCode = drainer.stop("SIGTERM");
    await eventually(
      "the pool to see the drain",
      async () => (await statusOf(gateway.url, "/v2/health/ready", "drain")) === 503,
    );
    // A rolling restart: the request arriving meanwhile is not sent to the draining agent, nor refused.
    const waiting = quick("drain", { "X-Request-Timeout": "60" });
    expectStatus(await running, 200);
    expect(await exitCode).toBe(0);
    expect(drainer.process.output()).toMatch(/draining/);
    await agentIn("drain", "successor", []);
    const served = await waiting;
    expectStatus(served, 200);
    if (served.ok) expect(served.result.headers.get("x-switchyard-replica")).toBe("successor/0");
  });

  test("a gateway that goes silent is noticed by the heartbeat; the agent reconnects when it is back", async () => {
    const steady = agents.get("steady");
    if (steady === undefined) throw new Error("no steady agent");
    expectStatus(await quick("steady"), 200);
    const pid = gateway.process.child.pid;
    if (pid === undefined) throw new Error("no wrangler pid");
    // Freeze wrangler and workerd: the TCP connection stays open but nothing answers the pings.
    process.kill(-pid, "SIGSTOP");
    try {
      // Either socket's heartbeat may find the silence first; both end the connection.
      await steady.process.waitForOutput(/(the gateway|the data socket) went silent, reconnecting/, 15_000);
    } finally {
      process.kill(-pid, "SIGCONT");
    }
    await waitForAgents(gateway.url, 1, "steady");
    expectStatus(await quick("steady"), 200);
    expect(steady.process.output().match(/connected to the gateway/g)?.length).toBeGreaterThanOrEqual(2);
  });

  test("after a gateway restart the agents reconnect by themselves and are routed to again", async () => {
    await gateway.restart();
    await waitForAgents(gateway.url, 1, "steady", AFTER_RESTART_MS);
    await waitForAgents(gateway.url, 1, "busy", AFTER_RESTART_MS);
    expectStatus(await quick("steady"), 200);
    expectStatus(await slow("busy"), 200);
  });
});
