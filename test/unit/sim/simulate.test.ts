import { describe, expect, test } from "vitest";
import { EventQueue } from "../../../bench/sim/event-queue.ts";
import { Prng } from "../../../bench/sim/prng.ts";
import { GiB, type Scenario, uniformCatalogue } from "../../../bench/sim/scenario.ts";
import { s1 } from "../../../bench/sim/scenarios/s1-zipf.ts";
import { SimReplica, type SimRequest } from "../../../bench/sim/sim-replica.ts";
import { simulate } from "../../../bench/sim/simulate.ts";
import { buildTrace } from "../../../bench/sim/trace.ts";
import { leastRecentlyUsedFirst } from "../../../shared/cache/admission.ts";
import { routingPolicy } from "../../../shared/routing/policies.ts";

/** One replica, one model: 0.8 requests a second on 4 slots of 50 ms, so no request ever waits for a slot. */
const single: Scenario = {
  ...s1,
  id: "single",
  replicas: 1,
  maxModels: 1,
  maxBytes: 4 * GiB,
  models: uniformCatalogue(1, { bytes: GiB, loadMs: { min: 2_000, max: 2_000 }, inferMs: 50 }),
  loadFraction: 0.01,
  requests: 300,
};

describe("simulate: cases whose answer is known", () => {
  test("no misses, no queueing: every request takes the inference time, and every one is a hit", () => {
    const result = simulate(single, buildTrace(single), routingPolicy("switchyard"), { noMisses: true });
    expect(result.hitRate).toBe(1);
    expect([result.p50, result.p95, result.p99]).toEqual([50, 50, 50]);
    expect(result.loads).toBe(0);
  });

  test("a cold start: one load; the requests arriving during it miss, the rest are hits at the inference time", () => {
    const trace = buildTrace(single);
    const first = trace.arrivals[0] as number;
    const duringLoad = trace.arrivals.filter((at) => at <= first + 2_000).length;
    expect(duringLoad).toBeGreaterThanOrEqual(1);
    expect(duringLoad).toBeLessThanOrEqual(3); // so that p99 (the 297th of 300) is a hit
    for (const policy of ["switchyard", "baseline", "random", "modelmesh", "ray-multiplex"]) {
      const result = simulate(single, trace, routingPolicy(policy));
      expect(result.loads, policy).toBe(1);
      expect(result.hitRate, policy).toBeCloseTo(1 - duringLoad / single.requests, 10);
      expect(result.p99, policy).toBe(50);
      expect(result.rejected + result.timedOut, policy).toBe(0);
    }
  });

  test("serving policies: a pinned copy serves every request of its model as a hit; a cap keeps the loads down", () => {
    const two: Scenario = {
      ...single,
      replicas: 2,
      maxModels: 1,
      models: uniformCatalogue(2, { bytes: GiB, loadMs: { min: 2_000, max: 2_000 }, inferMs: 50 }),
      loadFraction: 0.05,
    };
    const trace = buildTrace(two);
    const [first, second] = two.models.map((model) => model.name);
    if (first === undefined || second === undefined) throw new Error("two models");
    const pinned = simulate(two, trace, routingPolicy("baseline"), {
      focus: first,
      policies: { [first]: { minCopies: 1 } },
    });
    // One replica is pinned to the first model: it never loads, and every request of it is a hit.
    expect(pinned.focus).toMatchObject({ model: first, hitRate: 1, p99: 50 });
    expect(pinned.loads).toBe(1);
    // A cap of one copy on each model, on two replicas that hold one model each: one load per model at most.
    const capped = simulate(two, trace, routingPolicy("baseline"), {
      policies: { [first]: { maxCopies: 1 }, [second]: { maxCopies: 1 } },
    });
    expect(capped.loads).toBeLessThanOrEqual(2);
  });

  test("deterministic: the same seed gives the same run, another seed another trace", () => {
    const small = { ...s1, requests: 2_000 };
    const trace = buildTrace(small);
    const first = simulate(small, trace, routingPolicy("switchyard"));
    const second = simulate(small, buildTrace(small), routingPolicy("switchyard"));
    expect(second).toEqual(first);
    expect(buildTrace({ ...small, seed: 99 }).arrivals).not.toEqual(trace.arrivals);
  });
});

describe("buildTrace", () => {
  test("Zipf 1.1 over 40 models: the most popular takes about 27% of requests, at the asked rate", () => {
    const trace = buildTrace(s1);
    const counts = new Map<number, number>();
    for (const index of trace.models) counts.set(index, (counts.get(index) ?? 0) + 1);
    const top = Math.max(...counts.values()) / s1.requests;
    expect(top).toBeGreaterThan(0.25);
    expect(top).toBeLessThan(0.29);
    const seconds = (trace.arrivals[s1.requests - 1] as number) / 1000;
    expect(s1.requests / seconds).toBeGreaterThan(0.95 * 256);
    expect(s1.requests / seconds).toBeLessThan(1.05 * 256);
  });
});

describe("SimReplica: the agent's cache rules", () => {
  test("a model in use or loading is never evicted: the next model waits for room", () => {
    const events = new EventQueue();
    let now = 0;
    const finished: Array<[number, number, boolean]> = [];
    const catalogue = new Map(
      uniformCatalogue(2, { bytes: GiB, loadMs: { min: 100, max: 100 }, inferMs: 50 }).map((spec) => [
        spec.name,
        spec,
      ]),
    );
    const replica = new SimReplica(
      "r",
      {
        concurrency: 2,
        limits: { maxModels: 1, maxBytes: Infinity },
        keepAliveMs: 0,
        victimOrder: leastRecentlyUsedFirst,
        serialLoads: false,
      },
      catalogue,
      new Prng(1),
      {
        now: () => now,
        schedule: (at, run) => events.schedule(at, run),
        finished: (request, hit) => finished.push([request.id, now, hit]),
        changed: () => {},
      },
    );
    const request = (id: number, model: string): SimRequest => ({
      id,
      model,
      arrivedAt: 0,
      deadline: 60_000,
    });
    replica.accept(request(1, "model-01"));
    replica.accept(request(2, "model-02"));
    expect(replica.state().loading).toEqual([{ name: "model-01", version: "1" }]);
    for (let event = events.pop(); event !== undefined; event = events.pop()) {
      now = event.at;
      event.run();
    }
    // model-01 loads (100 ms) and runs (50 ms); only then is it idle, evicted, and model-02 loaded.
    expect(finished).toEqual([
      [1, 150, false],
      [2, 300, false],
    ]);
    expect(replica.loads).toBe(2);
    expect(replica.state().loaded.map((model) => model.name)).toEqual(["model-02"]);
  });
});
