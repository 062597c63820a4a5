import { beforeAll, describe, expect, test } from "vitest";
import { BIG_MODEL, MULTIPLEX_MODELS } from "../fixtures/paths.ts";
import { type AgentProcess, startAgent } from "./harness/agents.ts";
import { call, eventually, mlpRequest, type Outcome, sleep, waitForAgents } from "./harness/oip-client.ts";
import { poolMetric } from "./harness/pool-probes.ts";
import { watchProcesses } from "./harness/processes-under-test.ts";
import { type GatewayProcess, SECRETS, startGateway } from "./harness/wrangler-dev.ts";

// Faults survived end to end, on a real `wrangler dev` (1 s heartbeats) with real agents: an agent that
// hangs, an agent that is killed, a registry that restarts. Everything runs with distinctive secrets, and
// the last test looks for them in every line the gateway and the agents printed and in every error body.

const canary = (kind: string) => `${kind}-canary-${crypto.randomUUID()}`;
const CANARY = { apiKey: canary("sk"), agentToken: canary("agent"), adminKey: canary("admin") };

let gateway: GatewayProcess;
const agents: AgentProcess[] = [];
/** Every error body a client got in this file. */
const errorBodies: string[] = [];

const QUICK = MULTIPLEX_MODELS[1] ?? "";
// The big MLP with this many rows runs for about three seconds on one CPU thread of a machine like CI's.
const SLOW_ROWS = 3000;

async function request(
  pool: string,
  model: string,
  rows: number,
  headers: Record<string, string> = {},
): Promise<Outcome> {
  const outcome = await call(gateway.url, model, mlpRequest(rows), {
    pool,
    binaryInputs: rows > 1,
    headers: { Authorization: `Bearer ${CANARY.apiKey}`, "X-Request-Timeout": "60", ...headers },
  });
  if (!outcome.ok) errorBodies.push(outcome.message);
  return outcome;
}

async function agentIn(pool: string, name: string, args: readonly string[] = []): Promise<AgentProcess> {
  const agent = await startAgent({ gateway: gateway.wsUrl, name, pool, token: CANARY.agentToken, args });
  agents.push(agent);
  return agent;
}

function expectServed(outcome: Outcome, by?: string): void {
  expect(outcome.ok ? "200" : `${outcome.status} ${outcome.message}`).toBe("200");
  if (outcome.ok && by !== undefined) expect(outcome.result.headers.get("x-switchyard-replica")).toBe(by);
}

beforeAll(async () => {
  gateway = await startGateway({
    vars: {
      // The harness's own helpers (readiness polls) use the local key; everything else uses the canaries.
      API_KEYS: `${CANARY.apiKey},${SECRETS.apiKey}`,
      AGENT_TOKENS: CANARY.agentToken,
      ADMIN_KEY: CANARY.adminKey,
      HEARTBEAT_SECONDS: "1",
    },
  });
});

watchProcesses(() => ({ gateways: [gateway], agents }));

describe("agents that fail", () => {
  test("an agent that hangs with a request in flight is noticed by its missed heartbeats; the request runs again elsewhere", async () => {
    const sleepy = await agentIn("hang", "sleepy", ["--preload", BIG_MODEL, "--max-concurrency", "1"]);
    await waitForAgents(gateway.url, 1, "hang");
    await agentIn("hang", "awake");
    await waitForAgents(gateway.url, 2, "hang");
    const sentAt = performance.now();
    const running = request("hang", BIG_MODEL, SLOW_ROWS);
    await sleep(300);
    const pid = sleepy.process.child.pid;
    if (pid === undefined) throw new Error("no agent pid");
    // Frozen: its TCP connection stays open, nothing answers, no close ever arrives.
    process.kill(-pid, "SIGSTOP");
    try {
      const outcome = await running;
      expectServed(outcome, "awake/0");
      // Three missed 1 s heartbeats, not the request's 60 s deadline.
      expect(outcome.finishedAt - sentAt).toBeLessThan(20_000);
    } finally {
      process.kill(-pid, "SIGCONT");
    }
    // Once it runs again it finds its connection closed, and joins again by itself.
    await sleepy.process.waitForOutput(/connected to the gateway[\s\S]*connected to the gateway/, 30_000);
    await waitForAgents(gateway.url, 2, "hang");
  });

  test("a second SIGTERM exits at once; the requests it had in flight run again on another agent", async () => {
    // Four slow requests at once: draining would wait for all of them (the model's one session runs them
    // one after the other on its thread, so draining would take many seconds).
    // The one that takes them over joins first: starting it after the requests once gave them time to end
    // before the signals. The requests go to the agent that holds their model and has four slots free.
    const impatient = await agentIn("twice", "impatient", ["--preload", BIG_MODEL, "--max-concurrency", "4"]);
    await agentIn("twice", "patient");
    await waitForAgents(gateway.url, 2, "twice");
    const running = Array.from({ length: 4 }, () => request("twice", BIG_MODEL, SLOW_ROWS));
    // Signalled once the gateway has granted it some (those not yet sent by then go to the other agent):
    // the runs take seconds each, one after the other, so the drain has work to wait for.
    await eventually(
      "a slow request in flight",
      async () =>
        (await poolMetric(gateway.url, "twice", "switchyard_gateway_in_flight", {}, CANARY.adminKey)) >= 1,
    );
    const pid = impatient.process.child.pid;
    if (pid === undefined) throw new Error("no agent pid");
    process.kill(pid, "SIGTERM");
    await impatient.process.waitForOutput(/draining/, 10_000);
    const secondAt = performance.now();
    process.kill(pid, "SIGTERM");
    await impatient.process.exited;
    // It dies of the signal, as a process without a handler would.
    expect(impatient.process.child.signalCode).toBe("SIGTERM");
    // At most the run it was in the middle of, not its 30 s grace.
    expect(performance.now() - secondAt).toBeLessThan(5_000);
    expect(impatient.process.output()).toMatch(/second signal: exiting now/);
    const outcomes = await Promise.all(running);
    for (const outcome of outcomes) expectServed(outcome);
    const servedBy = outcomes.map((outcome) =>
      outcome.ok ? outcome.result.headers.get("x-switchyard-replica") : "",
    );
    expect(servedBy).toContain("patient/0");
  });
});

describe("a registry that restarts", () => {
  test("requests in flight and arriving meanwhile are all served; the agents come back by themselves", async () => {
    await agentIn("reset", "r1");
    await agentIn("reset", "r2");
    await waitForAgents(gateway.url, 2, "reset");
    const outcomes: Promise<Outcome>[] = [];
    for (let index = 0; index < 10; index += 1) {
      outcomes.push(request("reset", QUICK, 1));
      await sleep(50);
    }
    const restarted = await fetch(`${gateway.url}/admin/pools/reset/restart`, {
      method: "POST",
      headers: { Authorization: `Bearer ${CANARY.adminKey}` },
    });
    expect(restarted.status).toBe(202);
    for (let index = 0; index < 20; index += 1) {
      outcomes.push(request("reset", QUICK, 1));
      await sleep(50);
    }
    for (const outcome of await Promise.all(outcomes)) expectServed(outcome);
    await waitForAgents(gateway.url, 2, "reset");
    for (const agent of agents.filter((candidate) => /^r\d$/.test(candidate.name))) {
      expect(agent.process.output().match(/connected to the gateway/g)?.length).toBeGreaterThanOrEqual(2);
    }
  });
});

describe("secrets", () => {
  test("a secret presented where it does not belong is refused without being echoed", async () => {
    for (const [path, key] of [
      ["/v2", CANARY.agentToken],
      ["/v2", CANARY.adminKey],
      ["/admin/models", CANARY.apiKey],
      ["/agent/models/repository.json", CANARY.adminKey],
    ] as const) {
      const response = await fetch(`${gateway.url}${path}`, { headers: { Authorization: `Bearer ${key}` } });
      expect(response.status, path).toBe(403);
      errorBodies.push(await response.text());
    }
    // An agent started with a client key as its token is turned away, and says so without printing it.
    const wrong = await startAgent({
      gateway: gateway.wsUrl,
      name: "wrong-token",
      pool: "secrets",
      token: CANARY.apiKey,
      waitConnected: false,
    });
    agents.push(wrong);
    await wrong.process.waitForOutput(/refused the agent token \(403\)/, 30_000);
  });

  test("no secret appears in anything the gateway or the agents printed, nor in any error body", () => {
    const printed = [gateway.process, ...agents.map((agent) => agent.process)].map((process) => ({
      name: process.name,
      text: process.output(),
    }));
    // The file did produce logs and errors worth looking at.
    expect(printed.map((process) => process.text.length).reduce((a, b) => a + b)).toBeGreaterThan(1000);
    expect(errorBodies.length).toBeGreaterThanOrEqual(4);
    for (const secret of Object.values(CANARY)) {
      for (const { name, text } of printed)
        expect(text.includes(secret), `${name} printed a secret`).toBe(false);
      for (const body of errorBodies) expect(body).not.toContain(secret);
    }
  });
});
