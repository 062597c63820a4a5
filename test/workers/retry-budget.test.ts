import { describe, expect, it } from "vitest";
import { TokenBucket } from "../../gateway/limits/token-bucket.ts";
import type { AgentLink } from "../../gateway/registry/agent-link.ts";
import { Relay } from "../../gateway/registry/relay.ts";
import type { RelayOutcome } from "../../gateway/registry/relay-types.ts";
import { RetryBudget } from "../../gateway/registry/retry-budget.ts";
import { PROTOCOL_VERSION } from "../../shared/protocol/frames.ts";
import { baselinePolicy } from "../../shared/routing/baseline.ts";
import { replicaState } from "../support/replica-state.ts";

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
    const relay = new Relay({
      policy: baselinePolicy,
      maxQueue: 100,
      heartbeatMs: 1000,
      now: () => now,
      onAgentChanged: () => {},
      onAgentGone: () => {},
      retryBudget: new RetryBudget({ ratio: 0.2, minimum: 3, windowMs: 10_000 }),
    });
    const connect = (name: string, maxConcurrency: number): AgentLink => {
      const { 1: socket } = new WebSocketPair();
      socket.accept();
      return relay.register(socket, {
        type: "hello",
        protocol: PROTOCOL_VERSION,
        agent: { name, version: "test" },
        hints: [],
        replicas: [replicaState({ loaded: ["m"], maxConcurrency })],
        signatures: [],
        repository: { kind: "gateway" },
      });
    };
    const dying = connect("dying", 20);
    const outcomes: RelayOutcome[] = [];
    for (let index = 0; index < 20; index += 1) {
      void relay
        .infer({ model: "m", body: new Uint8Array(), timeoutMs: 60_000, budgetMs: 60_000 })
        .then((outcome) => outcomes.push(outcome));
    }
    connect("healthy", 20);
    now += 10;
    relay.disconnect(dying, "its connection closed");
    await new Promise((resolve) => setTimeout(resolve, 0));
    // 20 requests in the window: 20% is 4 reruns (above the minimum of 3); 16 fail.
    expect(outcomes).toHaveLength(16);
    for (const outcome of outcomes) {
      expect(outcome).toMatchObject({ ok: false, status: 503 });
      if (!outcome.ok) expect(outcome.message).toMatch(/retry budget is spent/);
    }
    expect(relay.snapshot().agents.map((agent) => [agent.id, agent.inFlight["0"]])).toEqual([["healthy", 4]]);
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
