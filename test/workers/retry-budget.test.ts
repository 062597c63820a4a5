import { describe, expect, it } from "vitest";
import { TokenBucket } from "../../gateway/limits/token-bucket.ts";
import type { Grant } from "../../gateway/pool-calls.ts";
import type { AgentLink } from "../../gateway/registry/agent-link.ts";
import { RetryBudget } from "../../gateway/registry/retry-budget.ts";
import { Scheduler } from "../../gateway/registry/scheduler.ts";
import { baselinePolicy } from "../../shared/routing/baseline.ts";
import { replicaState } from "../support/replica-state.ts";
import { ASK_M, joinScheduler } from "./support/scheduler-agents.ts";

describe("the retry budget", () => {
  it("allows the minimum in a quiet window, a share of the requests in a busy one, and refills as it slides", () => {
    const budget = new RetryBudget({ ratio: 0.2, minimum: 2, windowMs: 10_000 });
    let now = 0;
    const retries = () => {
      let granted = 0;
      while (budget.tryRetry(now)) granted += 1;
      return granted;
    };
    expect(retries()).toBe(2);
    for (let index = 0; index < 50; index += 1) budget.request(now);
    // 20% of 50 requests, of which 2 were spent already.
    expect(retries()).toBe(8);
    now += 5_000;
    expect(retries()).toBe(0);
    now += 6_000;
    // The requests and retries of the first second have left the window.
    expect(retries()).toBe(2);
  });
});

describe("a sick pool", () => {
  it("reruns the requests of a dead agent only as far as the budget goes; the rest fail at once with why", async () => {
    let now = 1_000_000;
    const scheduler = new Scheduler({
      policy: baselinePolicy,
      maxQueue: 100,
      heartbeatMs: 1000,
      now: () => now,
      onAgentChanged: () => {},
      onAgentGone: () => {},
      retryBudget: new RetryBudget({ ratio: 0.2, minimum: 3, windowMs: 10_000 }),
    });
    const connect = (name: string, maxConcurrency: number): AgentLink =>
      joinScheduler(scheduler, name, [replicaState({ loaded: ["m"], maxConcurrency })]);
    const ask = ASK_M;
    const dying = connect("dying", 20);
    const grants: Grant[] = [];
    for (let index = 0; index < 20; index += 1) {
      const answer = await scheduler.reserve(ask);
      if (answer.ok !== true) throw new Error(JSON.stringify(answer));
      grants.push(answer.grant);
    }
    connect("healthy", 20);
    now += 10;
    scheduler.disconnect(dying, "its connection closed");
    // The dead agent's relay reports each run as lost while it may have been running.
    const decisions = grants.map((grant) =>
      scheduler.release({
        ticket: grant.ticket,
        channel: grant.channel,
        agentId: grant.agentId,
        replicaId: grant.replicaId,
        replica: grant.replica,
        model: "m",
        attempts: 1,
        reruns: 0,
        deadlinePassed: false,
        totalMs: 10,
        result: { kind: "lost", why: "its connection closed", started: true },
      }),
    );
    // 20 requests in the window: 20% is 4 reruns (above the minimum of 3); 16 fail.
    const refused = decisions.filter((decision) => !decision.again);
    expect(refused).toHaveLength(16);
    for (const decision of refused)
      expect(decision).toMatchObject({ refusal: expect.stringMatching(/retry budget is spent/) });
    for (const decision of decisions.filter((decision) => decision.again)) {
      expect(decision).toEqual({ again: true, attempts: 1, reruns: 1 });
      expect(await scheduler.reserve({ ...ask, attempts: 1, reruns: 1 })).toMatchObject({
        ok: true,
        grant: { agentId: "healthy" },
      });
    }
    expect(scheduler.snapshot().agents.map((agent) => [agent.id, agent.inFlight["0"]])).toEqual([
      ["healthy", 4],
    ]);
  });
});

describe("the token bucket of a rate limit", () => {
  it("lets a burst through, then one request per refill interval", () => {
    const bucket = new TokenBucket(3, 1, 0);
    expect([0, 0, 0, 0].map((at) => bucket.take(at).allowed)).toEqual([true, true, true, false]);
    expect(bucket.take(500)).toEqual({ allowed: false, retryAfterMs: 500 });
    expect(bucket.take(1000).allowed).toBe(true);
    expect(bucket.take(1000).allowed).toBe(false);
    // Idle for a long time: the bucket is full again, never fuller.
    expect([1, 2, 3, 4].map(() => bucket.take(60_000).allowed)).toEqual([true, true, true, false]);
  });
});
