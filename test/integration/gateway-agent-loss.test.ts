import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { MULTIPLEX_MODELS } from "../fixtures/paths.ts";
import { type AgentOptions, type AgentProcess, startAgent } from "./harness/agents.ts";
import { copyOf, temporaryRepository } from "./harness/behaviour-models.ts";
import { call, mlpRequest, type Outcome, statusOf, waitForAgents } from "./harness/oip-client.ts";
import {
  describeOutcome,
  freeze,
  poolMetric,
  replicaOf,
  waitForMetric,
  withAgentFrozen,
} from "./harness/pool-probes.ts";
import { watchProcesses } from "./harness/processes-under-test.ts";
import { type GatewayProcess, SECRETS, startGateway } from "./harness/wrangler-dev.ts";

// What a client sees when agents die under its requests, and when a pool's registry restarts, with a real
// `wrangler dev` and real agent processes: a request that may have run is run again once, and only for a
// model that may run twice, and only as far as the pool's retry budget goes; requests wait a grace period
// for agents that left. Agents are held still with SIGSTOP so that requests are certainly in flight at an
// agent when it is killed (SIGKILL) or the registry restarts. Each test has a pool of its own.

const GRACE_SECONDS = 6;
const [M0 = "m000", M1 = "m001"] = MULTIPLEX_MODELS;

let gateway: GatewayProcess;
const agents: AgentProcess[] = [];
/** "once": config.json says `"idempotent": false`; "again": an ordinary model (idempotent by default). */
let repository: string;

beforeAll(async () => {
  repository = temporaryRepository("agent-loss", [
    copyOf(M0, "once", { idempotent: false }),
    copyOf(M1, "again"),
  ]);
  gateway = await startGateway({ vars: { AGENT_GRACE_SECONDS: String(GRACE_SECONDS) } });
});

afterAll(() => {
  if (repository !== undefined) rmSync(repository, { recursive: true, force: true });
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

const send = (pool: string, model: string, timeoutSeconds = "30", seed = 1): Promise<Outcome> =>
  call(gateway.url, model, mlpRequest(1, seed), { pool, headers: { "X-Request-Timeout": timeoutSeconds } });

function expectRefusal(outcome: Outcome, status: number, message: RegExp): void {
  expect(describeOutcome(outcome)).toMatch(new RegExp(`^${status} `));
  if (outcome.ok) return;
  expect(outcome.message).toMatch(message);
}

describe("an agent that dies with requests in flight", () => {
  test("an idempotent model's request runs again on another agent; one whose config.json says idempotent: false gets 503 at once, saying why", async () => {
    const pool = "once";
    const dying = await startIn(pool, "dying", { models: repository, args: ["--preload", "once"] });
    await waitForAgents(gateway.url, 1, pool);
    // Frozen: both requests reach the agent and stay there, neither answered.
    freeze(dying);
    const once = send(pool, "once");
    const again = send(pool, "again");
    await waitForMetric(gateway.url, pool, "switchyard_gateway_in_flight", 2);
    await startIn(pool, "survivor", { models: repository });
    await waitForAgents(gateway.url, 2, pool);

    const killedAt = performance.now();
    await dying.stop("SIGKILL");
    const refused = await once;
    expectRefusal(
      refused,
      503,
      /^the agent serving this request disconnected \(.+\); it may or may not have run, and it was not run again: 'once' is not idempotent \(its config\.json says so\)$/,
    );
    expect(refused.finishedAt - killedAt).toBeLessThan(5_000);
    expect(replicaOf(refused)).toBe("dying/0");
    if (!refused.ok) expect(refused.headers.get("retry-after")).toBe("1");
    expect(describeOutcome(await again)).toBe("200 survivor/0 miss");
  });

  test("a request is run again at most once: when the agent it was run again on dies too, 503 saying so", async () => {
    const pool = "rerun";
    const first = await startIn(pool, "first");
    await waitForAgents(gateway.url, 1, pool);
    freeze(first);
    const request = send(pool, M0);
    await waitForMetric(gateway.url, pool, "switchyard_gateway_in_flight", 1);
    const second = await startIn(pool, "second");
    await waitForAgents(gateway.url, 2, pool);
    freeze(second);

    await first.stop("SIGKILL");
    // The request is run again on the other agent (frozen too): it is in flight there.
    await waitForMetric(gateway.url, pool, "switchyard_gateway_replica_in_flight", 1, {
      agent: "second",
      replica: "0",
      device: "cpu",
    });
    const killedAt = performance.now();
    await second.stop("SIGKILL");
    const outcome = await request;
    // Not sent to wait for an agent to come back (which would end in a 503 after the grace): refused now.
    expectRefusal(
      outcome,
      503,
      /it may or may not have run, and it was not run again: it had been run again once already$/,
    );
    expect(replicaOf(outcome)).toBe("second/0");
    expect(outcome.finishedAt - killedAt).toBeLessThan(GRACE_SECONDS * 1000 - 1_000);
  });

  test("the retry budget: of 20 requests a dead agent had in flight, 10 run again (the minimum) and 10 fail at once saying the budget is spent", async () => {
    const pool = "budget";
    const dying = await startIn(pool, "dying", { args: ["--max-concurrency", "32", "--preload", M0] });
    await waitForAgents(gateway.url, 1, pool);
    freeze(dying);
    const requests = Array.from({ length: 20 }, (_, index) => send(pool, M0, "60", index));
    await waitForMetric(gateway.url, pool, "switchyard_gateway_in_flight", 20);
    await startIn(pool, "healthy");
    await waitForAgents(gateway.url, 2, pool);
    const retriesBefore = await poolMetric(gateway.url, pool, "switchyard_gateway_retries_total");

    const killedAt = performance.now();
    await dying.stop("SIGKILL");
    const outcomes = await Promise.all(requests);
    const served = outcomes.filter((outcome) => outcome.ok);
    const refused = outcomes.filter((outcome) => !outcome.ok);
    // 20 requests in the budget's window allow 20% (4) retries, but never fewer than the minimum of 10.
    expect(served.map((outcome) => replicaOf(outcome))).toEqual(Array(10).fill("healthy/0"));
    expect(refused).toHaveLength(10);
    for (const outcome of refused) {
      expectRefusal(
        outcome,
        503,
        /^the agent serving this request disconnected \(.+\); it may or may not have run, and it was not run again: the pool's retry budget is spent \(too many retries lately\)$/,
      );
      expect(replicaOf(outcome)).toBe("dying/0");
      expect(outcome.finishedAt - killedAt).toBeLessThan(5_000);
    }
    expect(await poolMetric(gateway.url, pool, "switchyard_gateway_retries_total")).toBe(retriesBefore + 10);
  });
});

describe("a pool whose agents left", () => {
  test(`requests wait AGENT_GRACE_SECONDS (${GRACE_SECONDS} s here) for the agents; then they and new ones get 503; one whose deadline comes first gets 504`, async () => {
    const pool = "grace";
    const gone = await startIn(pool, "gone");
    await waitForAgents(gateway.url, 1, pool);
    expect(describeOutcome(await send(pool, M0))).toBe("200 gone/0 miss");

    const killedAt = performance.now();
    await gone.stop("SIGKILL");
    const waiting = send(pool, M0, "30");
    const impatient = await send(pool, M0, "0.3");
    expectRefusal(
      impatient,
      504,
      /^no agent was connected to serve 'm000', and none came back within the request's deadline of 300 ms$/,
    );
    expect(await statusOf(gateway.url, "/v2/health/ready", pool)).toBe(503);

    const waited = await waiting;
    expectRefusal(
      waited,
      503,
      /^no backend can serve 'm000': no agent is connected, and the agents that were did not come back in time$/,
    );
    // The grace counts from the moment the agent left, which is after the kill.
    expect(waited.finishedAt - killedAt).toBeGreaterThan(GRACE_SECONDS * 1000 - 500);
    expect(waited.finishedAt - killedAt).toBeLessThan(GRACE_SECONDS * 1000 + 10_000);

    const sentAt = performance.now();
    const refused = await send(pool, M0, "30");
    expectRefusal(refused, 503, /^no backend can serve 'm000': no agent is connected$/);
    expect(refused.finishedAt - sentAt).toBeLessThan(2_000);
    if (!refused.ok) expect(refused.headers.get("retry-after")).toBe("1");
  });
});

describe("a registry restart (POST /admin/pools/{pool}/restart)", () => {
  test("with requests in flight: an idempotent model's is sent again and served once the agent is back; one for a model that is not idempotent gets 503 saying why", async () => {
    const pool = "restart";
    const agent = await startIn(pool, "phoenix", { models: repository, args: ["--preload", "once"] });
    await waitForAgents(gateway.url, 1, pool);
    const { once, again, restartedAt } = await withAgentFrozen(agent, async () => {
      const again = send(pool, "again");
      const pending = send(pool, "once");
      await waitForMetric(gateway.url, pool, "switchyard_gateway_in_flight", 2);
      const restartedAt = performance.now();
      const restarted = await fetch(`${gateway.url}/admin/pools/${pool}/restart`, {
        method: "POST",
        headers: { Authorization: `Bearer ${SECRETS.adminKey}` },
      });
      expect(restarted.status).toBe(202);
      expect(await restarted.json()).toEqual({ pool, restarted: true });
      // The registry tells its agents' relays before it goes: they fail the runs in flight as "may have
      // started", and the registry's rules (which models must not run twice) answer at once.
      return { once: await pending, again, restartedAt };
    });
    expectRefusal(
      once,
      503,
      /^the agent serving this request disconnected \(the registry was restarted by an admin\); it may or may not have run, and it was not run again: 'once' is not idempotent \(its config.json says so\)$/,
    );
    expect(once.finishedAt - restartedAt).toBeLessThan(5_000);
    if (!once.ok) expect(once.headers.get("retry-after")).toBe("1");

    // The restart dropped the agent's websocket: it dials in again, and the other request is run there.
    expect(describeOutcome(await again)).toMatch(/^200 phoenix\/0 (hit|miss)$/);
    expect(agent.process.output().match(/connected to the gateway/g)?.length).toBeGreaterThanOrEqual(2);
    await waitForAgents(gateway.url, 1, pool);
  });
});
