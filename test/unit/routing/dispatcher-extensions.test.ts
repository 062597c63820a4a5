import { describe, expect, test } from "vitest";
import { baselinePolicy } from "../../../shared/routing/baseline.ts";
import { Dispatcher, type Submitted } from "../../../shared/routing/dispatcher.ts";
import { rayMultiplexPolicy } from "../../../shared/routing/ray-multiplex.ts";
import { switchyardPolicy } from "../../../shared/routing/switchyard.ts";
import type { PoolView, RoutingContext, RoutingPolicy } from "../../../shared/routing/types.ts";
import { replicaState as state } from "../../support/replica-state.ts";

// What the Dispatcher gained for the policies of issue 4: measured demand, the queue in the context,
// loads it caused before reports show them, per-policy capacity, and tick()/nextWakeup() for bounded waits.

function setup(policy: RoutingPolicy = baselinePolicy) {
  const clock = { now: 1_000 };
  const dispatcher = new Dispatcher<string>({ policy, maxQueue: 10, now: () => clock.now, random: () => 0 });
  return { clock, dispatcher };
}

const sent = (result: Submitted<string>) => (result.kind === "dispatched" ? result.dispatch : undefined);

describe("Dispatcher: demand and context", () => {
  test("every submitted request counts toward its model's demand, dispatched or queued", () => {
    const { clock, dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1 }));
    for (let i = 0; i < 5; i += 1) dispatcher.submit({ model: "m" }, `r${i}`, 99_999);
    expect(dispatcher.queueLength).toBe(4);
    expect(dispatcher.demand.ratePerSecond("m", clock.now)).toBeGreaterThan(0);
    expect(dispatcher.demand.ratePerSecond("other", clock.now)).toBe(0);
  });

  test("policies see the pool and the queue, indexed by model, and the sizes of the models in their context", () => {
    const seen: Array<{
      queue: string[];
      waitingForM: number;
      replicas: string[];
      bytes: number | undefined;
    }> = [];
    const spy: RoutingPolicy = {
      name: "spy",
      route: (_request, pool: PoolView, context: RoutingContext) => {
        seen.push({
          queue: pool.queue.map((waiting) => waiting.request.model),
          waitingForM: pool.waitingByModel.get("m")?.length ?? 0,
          replicas: pool.replicas.map((replica) => replica.address),
          bytes: context.modelBytes?.get("m"),
        });
        return { kind: "queue" };
      },
      pickQueued: () => -1,
    };
    const { dispatcher } = setup(spy);
    dispatcher.upsertReplica("a", state({ maxConcurrency: 2, loaded: ["m"] }));
    dispatcher.submit({ model: "m" }, "first", 99_999);
    dispatcher.submit({ model: "n" }, "second", 99_999);
    expect(seen.at(-1)).toEqual({ queue: ["m"], waitingForM: 1, replicas: ["a"], bytes: 1000 });
  });
});

describe("Dispatcher: loads it caused", () => {
  test("a request sent to load a model marks the load pending until a report shows it", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 2 }));
    expect(sent(dispatcher.submit({ model: "m" }, "r1", 99_999))?.expect).toBe("load");
    expect(dispatcher.replicas()[0]?.pendingLoads).toEqual([{ model: "m", since: 1_000 }]);
    dispatcher.upsertReplica("a", state({ maxConcurrency: 2 })); // a report from before the request arrived there
    expect(dispatcher.replicas()[0]?.pendingLoads).toHaveLength(1);
    dispatcher.upsertReplica("a", state({ maxConcurrency: 2, loading: ["m"] }));
    expect(dispatcher.replicas()[0]?.pendingLoads).toBeUndefined();
  });

  test("a pending load no report ever showed is forgotten after a while", () => {
    const { clock, dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 2 }));
    dispatcher.submit({ model: "m" }, "r1", 99_999);
    clock.now += 60_000;
    dispatcher.upsertReplica("a", state({ maxConcurrency: 2 }));
    expect(dispatcher.replicas()[0]?.pendingLoads).toBeUndefined();
  });

  test("the request that caused a load ending resolves it: a model missing from the repository does not hold its next requests back", () => {
    const { dispatcher } = setup(switchyardPolicy);
    dispatcher.upsertReplica("a", state({ maxConcurrency: 4 }));
    dispatcher.upsertReplica("b", state({ maxConcurrency: 4 }));
    expect(sent(dispatcher.submit({ model: "typo" }, "r1", 99_999))?.expect).toBe("load");
    // Coalescing: while that load may be under way, another request for the model waits for it.
    expect(dispatcher.submit({ model: "typo" }, "r2", 99_999)).toEqual({ kind: "queued" });
    // The agent answered r1 with a 404 (its report shows nothing loaded): r2 goes on at once.
    dispatcher.upsertReplica("a", state({ maxConcurrency: 4 }));
    const next = dispatcher.release("a", { model: "typo" });
    expect(next.map((each) => [each.payload, each.expect])).toEqual([["r2", "load"]]);
  });
});

describe("Dispatcher: a policy's own capacity", () => {
  test("ray-multiplex fills a replica to max_ongoing_requests (5), beyond its 2 slots", () => {
    const { dispatcher } = setup(rayMultiplexPolicy);
    dispatcher.upsertReplica("a", state({ maxConcurrency: 2, loaded: ["m"] }));
    const results = Array.from({ length: 6 }, (_, i) => dispatcher.submit({ model: "m" }, `r${i}`, 99_999));
    expect(results.filter((result) => result.kind === "dispatched")).toHaveLength(5);
    expect(dispatcher.queueLength).toBe(1);
    expect(dispatcher.release("a").map((dispatch) => dispatch.payload)).toEqual(["r5"]);
  });
});

describe("Dispatcher: tick and nextWakeup", () => {
  /** Leaves slots empty until `readyAt`, then hands out the oldest request. */
  function waitsUntil(readyAt: number): RoutingPolicy {
    return {
      name: "waits",
      route: () => ({ kind: "queue" }),
      pickQueued: (_replica, { queue }, context) => (context.now >= readyAt && queue.length > 0 ? 0 : -1),
      nextWakeup: (_pool, context) => (context.now < readyAt ? readyAt : undefined),
    };
  }

  test("nextWakeup says when; tick at that time dispatches what the wait held back", () => {
    const { clock, dispatcher } = setup(waitsUntil(5_000));
    dispatcher.upsertReplica("a", state({ maxConcurrency: 2 }));
    expect(dispatcher.nextWakeup()).toBeUndefined(); // nothing waits
    dispatcher.submit({ model: "m" }, "r1", 99_999);
    expect(dispatcher.nextWakeup()).toBe(5_000);
    expect(dispatcher.tick()).toEqual([]);
    clock.now = 5_000;
    expect(dispatcher.tick()).toEqual([{ address: "a", payload: "r1", expect: "load", queuedMs: 4_000 }]);
    expect(dispatcher.nextWakeup()).toBeUndefined();
  });

  test("a policy without nextWakeup never asks for a tick", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1 }));
    dispatcher.submit({ model: "m" }, "r1", 99_999);
    dispatcher.submit({ model: "m" }, "r2", 99_999);
    expect(dispatcher.nextWakeup()).toBeUndefined();
  });
});
