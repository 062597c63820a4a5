import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { SwitchyardError } from "../../../shared/errors.ts";
import { baselinePolicy } from "../../../shared/routing/baseline.ts";
import {
  BACKLOG_ROUNDS,
  type Dispatch,
  Dispatcher,
  type NotHere,
  type Submitted,
} from "../../../shared/routing/dispatcher.ts";
import { ROUTING_POLICIES } from "../../../shared/routing/policies.ts";
import type { RoutingPolicy } from "../../../shared/routing/types.ts";
import { replicaState as state } from "../../support/replica-state.ts";

/** A dispatcher on the baseline policy with a clock the test moves. */
function setup(maxQueue = 10) {
  const clock = { now: 1_000 };
  const dispatcher = new Dispatcher<string>({
    policy: baselinePolicy,
    maxQueue,
    now: () => clock.now,
    random: () => 0,
  });
  return { clock, dispatcher };
}

function dispatched(result: Submitted<string> | NotHere): Dispatch<string> {
  if (result.kind !== "dispatched") throw new Error(`expected a dispatch, the request was ${result.kind}`);
  return result.dispatch;
}

const inFlight = (dispatcher: Dispatcher<string>, address: string) =>
  dispatcher.replicas().find((replica) => replica.address === address)?.inFlight;

/** The error a refused submit carries (it answers the client), or a failure when it was not refused. */
function refusal(submit: () => Submitted<string>): SwitchyardError {
  const result = submit();
  if (result.kind !== "dispatched" && result.kind !== "queued") return result.error;
  throw new Error(`expected submit to refuse the request; it was ${result.kind}`);
}

describe("Dispatcher.submit", () => {
  test("dispatches to the policy's choice at once and counts the request in flight", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("agent/0", state({ maxConcurrency: 2, loaded: ["resnet"] }));
    expect(dispatched(dispatcher.submit({ model: "resnet" }, "r1", 9_999))).toEqual({
      address: "agent/0",
      payload: "r1",
      expect: "hit",
      queuedMs: 0,
    });
    expect(inFlight(dispatcher, "agent/0")).toBe(1);
    expect(dispatcher.queueLength).toBe(0);
  });

  test("counts its own dispatches, not the replica's (lagging) report: a replica at maxConcurrency is not chosen again until a release", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1, loaded: ["resnet"] }));
    dispatcher.upsertReplica("b", state({ maxConcurrency: 1, loaded: ["resnet"] }));
    const first = dispatched(dispatcher.submit({ model: "resnet" }, "r1", 9_999));
    const second = dispatched(dispatcher.submit({ model: "resnet" }, "r2", 9_999));
    expect(new Set([first.address, second.address])).toEqual(new Set(["a", "b"]));
    expect(dispatcher.submit({ model: "resnet" }, "r3", 9_999)).toEqual({ kind: "queued" });

    // The replica's own report still says 0 in flight: the dispatcher's count is what decides.
    dispatcher.upsertReplica(first.address, state({ maxConcurrency: 1, loaded: ["resnet"] }));
    expect(inFlight(dispatcher, first.address)).toBe(1);
    expect(dispatcher.queueLength).toBe(1);

    expect(dispatcher.release(first.address)).toEqual([
      { address: first.address, payload: "r3", expect: "hit", queuedMs: 0 },
    ]);
    expect(dispatcher.queueLength).toBe(0);
  });

  test("queues when every replica is full", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 2 }));
    dispatched(dispatcher.submit({ model: "m" }, "r1", 9_999));
    dispatched(dispatcher.submit({ model: "m" }, "r2", 9_999));
    expect(dispatcher.submit({ model: "m" }, "r3", 9_999)).toEqual({ kind: "queued" });
    expect(dispatcher.submit({ model: "other" }, "r4", 9_999)).toEqual({ kind: "queued" });
    expect(dispatcher.queueLength).toBe(2);
    expect(inFlight(dispatcher, "a")).toBe(2);
  });

  test("a full queue refuses with 429 queue_full and a Retry-After, and keeps what it had", () => {
    const { dispatcher } = setup(2);
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1 }));
    dispatched(dispatcher.submit({ model: "m" }, "r1", 9_999));
    dispatcher.submit({ model: "m" }, "r2", 9_999);
    dispatcher.submit({ model: "m" }, "r3", 9_999);
    const error = refusal(() => dispatcher.submit({ model: "m" }, "r4", 9_999));
    expect(error.code).toBe("queue_full");
    expect(error.status).toBe(429);
    expect(error.retryAfterSeconds).toBeGreaterThan(0);
    expect(error.headers()).toHaveProperty("Retry-After");
    expect(dispatcher.queueLength).toBe(2);
    expect(dispatcher.release("a").map((each) => each.payload)).toEqual(["r2"]);
  });

  test("a request that may go elsewhere is not queued behind BACKLOG_ROUNDS rounds of the replicas' slots; others still are", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 2 }));
    dispatcher.upsertReplica("b", state({ maxConcurrency: 1 }), { draining: true });
    dispatched(dispatcher.submit({ model: "m" }, "r1", 9_999, "backlog"));
    dispatched(dispatcher.submit({ model: "m" }, "r2", 9_999, "backlog"));
    // Two slots among the replicas taking work (the draining one's do not count): four may wait.
    for (let index = 0; index < BACKLOG_ROUNDS * 2; index++)
      expect(dispatcher.submit({ model: "m" }, `w${index}`, 9_999, "backlog")).toEqual({ kind: "queued" });
    expect(dispatcher.submit({ model: "m" }, "passed", 9_999, "backlog")).toEqual({ kind: "backlogged" });
    expect(dispatcher.queueLength).toBe(BACKLOG_ROUNDS * 2);
    expect(dispatcher.submit({ model: "m" }, "kept", 9_999)).toEqual({ kind: "queued" });
    expect(dispatcher.queued().map((waiting) => waiting.request.model)).toHaveLength(BACKLOG_ROUNDS * 2 + 1);
  });

  test("a request that may look for a match elsewhere is told where none is here: no replica holds it, or none advertises its hint", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ loaded: ["m"], maxConcurrency: 1 }), { hints: ["lora-1"] });
    expect(dispatcher.submit({ model: "cold" }, "r1", 9_999, "unmatched")).toEqual({
      kind: "unmatched",
      holds: false,
    });
    expect(dispatcher.submit({ model: "m", hint: "lora-2" }, "r2", 9_999, "unhinted")).toEqual({
      kind: "unmatched",
      holds: true,
    });
    // Its hint is advertised here, or it holds the model and asks for no hint: routed here as usual.
    expect(
      dispatched(dispatcher.submit({ model: "cold", hint: "lora-1" }, "r3", 9_999, "unhinted")).address,
    ).toBe("a");
    expect(dispatcher.submit({ model: "m" }, "r4", 9_999, "unhinted")).toEqual({ kind: "queued" });
    // A load on its way is a match too (coalescing), and a hint the caller is not looking for changes nothing.
    expect(dispatcher.submit({ model: "cold", hint: "lora-9" }, "r5", 9_999, "unmatched")).toEqual({
      kind: "queued",
    });
    expect(dispatcher.submit({ model: "cold" }, "r6", 9_999)).toEqual({ kind: "queued" });
  });

  test("a model at its max_copies goes only to the replicas holding it, and waits for them when they are busy", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ loaded: ["m"], maxConcurrency: 1 }));
    dispatcher.upsertReplica("b", state({ maxConcurrency: 1 }));
    dispatcher.upsertReplica("c", state({ maxConcurrency: 1 }));
    expect(dispatched(dispatcher.submit({ model: "m", maxCopies: 1 }, "r1", 9_999)).address).toBe("a");
    // b and c are idle, but a second copy would pass the cap: it waits for a.
    expect(dispatcher.submit({ model: "m", maxCopies: 1 }, "r2", 9_999)).toEqual({ kind: "queued" });
    // A freed slot on another replica is not offered the capped model's request; other models still go.
    expect(dispatcher.release("b")).toEqual([]);
    expect(dispatched(dispatcher.submit({ model: "other" }, "r3", 9_999)).address).toMatch(/^[bc]$/);
    expect(dispatcher.release("a").map((each) => [each.address, each.payload])).toEqual([["a", "r2"]]);
  });

  test("a cap of two lets one more copy be made (a load on its way counts); lifting the cap lets copies grow", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ loaded: ["m"], maxConcurrency: 1 }));
    dispatcher.upsertReplica("b", state({ maxConcurrency: 1 }));
    dispatcher.upsertReplica("c", state({ maxConcurrency: 1 }));
    dispatched(dispatcher.submit({ model: "m", maxCopies: 2 }, "r1", 9_999));
    const second = dispatched(dispatcher.submit({ model: "m", maxCopies: 2 }, "r2", 9_999));
    expect(second).toMatchObject({ expect: "load" });
    expect(dispatcher.submit({ model: "m", maxCopies: 2 }, "r3", 9_999)).toEqual({ kind: "queued" });
    // The cap lifted: the next request may load a third copy on the idle replica.
    const third = dispatched(dispatcher.submit({ model: "m" }, "r4", 9_999));
    expect(third).toMatchObject({ expect: "load" });
    expect(new Set(["a", second.address, third.address]).size).toBe(3);
  });

  test("a replica whose pinned models leave no room is not offered a load of another model, by submit or by a freed slot", () => {
    const { dispatcher } = setup();
    const full = state({ maxConcurrency: 2, maxModels: 1 });
    full.loaded = [{ name: "p", version: "1", bytes: 1, inFlight: 0, idleMs: 0, pinned: true }];
    dispatcher.upsertReplica("a", full);
    dispatcher.upsertReplica("b", state({ maxConcurrency: 1 }));
    expect(dispatched(dispatcher.submit({ model: "m" }, "r1", 9_999)).address).toBe("b");
    expect(dispatcher.submit({ model: "m" }, "r2", 9_999)).toEqual({ kind: "queued" });
    expect(dispatcher.release("a")).toEqual([]);
    // The pinned model itself still goes there.
    expect(dispatched(dispatcher.submit({ model: "p" }, "r3", 9_999)).address).toBe("a");
  });

  test("a draining replica's copy does not count against the cap", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ loaded: ["m"], maxConcurrency: 1 }), { draining: true });
    dispatcher.upsertReplica("b", state({ maxConcurrency: 1 }));
    expect(dispatched(dispatcher.submit({ model: "m", maxCopies: 1 }, "r1", 9_999)).address).toBe("b");
  });

  test("a request asked again goes to a replica it did not fail on, cold if need be, while one has a slot free; else back where it failed", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 4, loaded: ["resnet"] }));
    dispatcher.upsertReplica("b", state({ maxConcurrency: 1 }));
    const where = (payload: string, avoid?: string[]) => {
      const result = dispatched(
        dispatcher.submit({ model: "resnet", ...(avoid ? { avoid } : {}) }, payload, 9_999),
      );
      return `${result.address} ${result.expect}`;
    };
    expect(where("first")).toBe("a hit");
    // Failed on a (say its agent began draining before the registry knew): b loads it.
    expect(where("retry", ["a"])).toBe("b load");
    // b is full now: the one it failed on is better than waiting.
    expect(where("again", ["a"])).toBe("a hit");
    // Failed on both: any that can take it.
    expect(where("everywhere", ["a", "b"])).toBe("a hit");
  });

  test("a request asked again that the policy would queue for the replicas it did not fail on goes as a first ask would", () => {
    // A policy that sends a request only to a replica holding its model, and otherwise lets it wait.
    const holdersOnly: RoutingPolicy = {
      name: "holders-only",
      route: (request, pool) => {
        const holder = pool.replicas.find(
          (replica) =>
            replica.state.loaded.some((model) => model.name === request.model) &&
            replica.inFlight < replica.state.maxConcurrency,
        );
        return holder === undefined
          ? { kind: "queue" }
          : { kind: "dispatch", address: holder.address, expect: "hit" };
      },
      pickQueued: () => 0,
    };
    const dispatcher = new Dispatcher<string>({ policy: holdersOnly, maxQueue: 10, now: () => 1_000 });
    dispatcher.upsertReplica("a", state({ maxConcurrency: 2, loaded: ["m"] }));
    dispatcher.upsertReplica("b", state({ maxConcurrency: 2 }));
    // Among b alone it would wait (for nothing: b never loads m under this policy); it goes back to a.
    expect(dispatched(dispatcher.submit({ model: "m", avoid: ["a"] }, "retry", 9_999)).address).toBe("a");
    expect(dispatcher.queueLength).toBe(0);
  });

  test("in a sharded pool, a copy only on the replicas a request failed on does not keep it in that shard", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 4, loaded: ["m"] }));
    dispatcher.upsertReplica("b", state({ maxConcurrency: 4 }));
    expect(dispatched(dispatcher.submit({ model: "m" }, "first", 9_999, "unmatched")).address).toBe("a");
    // Failed on a: this shard holds no copy for it, so it looks for one elsewhere first.
    expect(dispatcher.submit({ model: "m", avoid: ["a"] }, "retry", 9_999, "unmatched")).toEqual({
      kind: "unmatched",
      holds: false,
    });
    // Asked to settle here (no other shard did better), it goes to b.
    expect(dispatched(dispatcher.submit({ model: "m", avoid: ["a"] }, "settled", 9_999)).address).toBe("b");
  });

  test("no replicas: 503 unavailable naming the model, nothing queued", () => {
    const { dispatcher } = setup();
    const error = refusal(() => dispatcher.submit({ model: "resnet" }, "r1", 9_999));
    expect(error.code).toBe("unavailable");
    expect(error.status).toBe(503);
    expect(error.message).toContain("resnet");
    expect(dispatcher.queueLength).toBe(0);
  });

  test("every replica draining: 503 unavailable", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 2, loaded: ["resnet"] }), { draining: true });
    expect(refusal(() => dispatcher.submit({ model: "resnet" }, "r1", 9_999)).status).toBe(503);
    dispatcher.upsertReplica("b", state({ maxConcurrency: 2 }));
    dispatcher.setDraining("b", true);
    expect(refusal(() => dispatcher.submit({ model: "resnet" }, "r2", 9_999)).status).toBe(503);
  });

  test("hints given to upsertReplica steer requests", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("plain", state({ maxConcurrency: 2, loaded: ["llm"] }));
    dispatcher.upsertReplica("tuned", state({ maxConcurrency: 2, loaded: ["llm"] }), {
      hints: ["adapter-7"],
    });
    expect(dispatched(dispatcher.submit({ model: "llm", hint: "adapter-7" }, "r1", 9_999)).address).toBe(
      "tuned",
    );
    // A later report without details keeps the hints.
    dispatcher.upsertReplica("tuned", state({ maxConcurrency: 2, loaded: ["llm"] }));
    expect(dispatched(dispatcher.submit({ model: "llm", hint: "adapter-7" }, "r2", 9_999)).address).toBe(
      "tuned",
    );
  });
});

describe("Dispatcher.release", () => {
  test("the default policy's freed slot takes a synchronous request for one held model before an older background one for another", () => {
    const clock = { now: 1_000 };
    const dispatcher = new Dispatcher<string>({
      policy: ROUTING_POLICIES.switchyard as RoutingPolicy,
      maxQueue: 10,
      now: () => clock.now,
      random: () => 0,
    });
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1, loaded: ["m1", "m2"] }));
    dispatched(dispatcher.submit({ model: "m1" }, "running", 99_999));
    dispatcher.submit({ model: "m1", background: true }, "queued-m1", 99_999);
    clock.now = 1_200;
    dispatcher.submit({ model: "m2" }, "sync-m2", 99_999);
    clock.now = 1_300;
    expect(dispatcher.release("a").map((each) => each.payload)).toEqual(["sync-m2"]);
    expect(dispatcher.release("a").map((each) => each.payload)).toEqual(["queued-m1"]);
  });

  test("a request that yields (background) takes a freed slot only when no other request waits, under every policy that queues", () => {
    const queueing: string[] = [];
    for (const [name, policy] of Object.entries(ROUTING_POLICIES)) {
      const clock = { now: 1_000 };
      const dispatcher = new Dispatcher<string>({
        policy,
        maxQueue: 10,
        now: () => clock.now,
        random: () => 0,
      });
      dispatcher.upsertReplica("a", state({ maxConcurrency: 1, loaded: ["m"] }));
      dispatched(dispatcher.submit({ model: "m" }, "running", 99_999));
      dispatcher.submit({ model: "m", background: true }, "queued-1", 99_999);
      clock.now = 1_100;
      dispatcher.submit({ model: "m", background: true }, "queued-2", 99_999);
      clock.now = 1_200;
      dispatcher.submit({ model: "m" }, "sync", 99_999);
      // Ray's policy sends them all to the replica's own queue (max_ongoing_requests): none waits here.
      if (dispatcher.queueLength === 0) continue;
      queueing.push(name);
      const order: string[] = [];
      for (let turn = 0; turn < 3; turn += 1) {
        clock.now += 100;
        order.push(...dispatcher.release("a").map((each) => each.payload));
      }
      expect(order, name).toEqual(["sync", "queued-1", "queued-2"]);
    }
    expect(queueing).toContain("switchyard");
    expect(queueing.length).toBeGreaterThanOrEqual(Object.keys(ROUTING_POLICIES).length - 1);
  });

  test("a freed slot goes to the oldest request for a model the replica holds, even if another is older", () => {
    const { clock, dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1, loaded: ["model-a"] }));
    dispatched(dispatcher.submit({ model: "model-a" }, "a1", 99_999));
    clock.now = 1_100;
    dispatcher.submit({ model: "model-b" }, "b1", 99_999);
    clock.now = 1_200;
    dispatcher.submit({ model: "model-a" }, "a2", 99_999);
    clock.now = 1_300;
    dispatcher.submit({ model: "model-a" }, "a3", 99_999);

    clock.now = 1_500;
    expect(dispatcher.release("a")).toEqual([{ address: "a", payload: "a2", expect: "hit", queuedMs: 300 }]);
    clock.now = 1_600;
    expect(dispatcher.release("a")).toEqual([{ address: "a", payload: "a3", expect: "hit", queuedMs: 300 }]);
    clock.now = 2_000;
    expect(dispatcher.release("a")).toEqual([{ address: "a", payload: "b1", expect: "load", queuedMs: 900 }]);
    expect(dispatcher.queueLength).toBe(0);
  });

  test("with nothing waiting, a release only frees the slot", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1 }));
    dispatched(dispatcher.submit({ model: "m" }, "r1", 9_999));
    expect(dispatcher.release("a")).toEqual([]);
    expect(inFlight(dispatcher, "a")).toBe(0);
    expect(dispatched(dispatcher.submit({ model: "m" }, "r2", 9_999)).queuedMs).toBe(0);
  });

  test("an extra release never makes the count negative (no phantom capacity)", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1 }));
    dispatcher.release("a");
    dispatcher.release("a");
    expect(inFlight(dispatcher, "a")).toBe(0);
    dispatched(dispatcher.submit({ model: "m" }, "r1", 9_999));
    expect(dispatcher.submit({ model: "m" }, "r2", 9_999)).toEqual({ kind: "queued" });
  });

  test("a release on a draining replica does not hand it queued work", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1 }));
    dispatched(dispatcher.submit({ model: "m" }, "r1", 9_999));
    dispatcher.submit({ model: "m" }, "r2", 9_999);
    dispatcher.setDraining("a", true);
    expect(dispatcher.release("a")).toEqual([]);
    expect(dispatcher.queueLength).toBe(1);
  });

  test("a replica back from draining takes waiting requests at once", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1 }));
    dispatcher.setDraining("a", true);
    dispatcher.upsertReplica("b", state({ maxConcurrency: 1 }));
    dispatched(dispatcher.submit({ model: "m" }, "r1", 9_999));
    dispatcher.submit({ model: "m" }, "r2", 9_999);
    const resumed = dispatcher.setDraining("a", false);
    expect(resumed.map((dispatch) => [dispatch.address, dispatch.payload])).toEqual([["a", "r2"]]);
  });

  test("a queued request handed to a replica loading its model is labelled loading", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", {
      ...state({ maxConcurrency: 1 }),
      loading: [{ name: "m", version: "1" }],
    });
    dispatched(dispatcher.submit({ model: "m" }, "r1", 9_999));
    dispatcher.submit({ model: "m" }, "r2", 9_999);
    expect(dispatcher.release("a").map((dispatch) => dispatch.expect)).toEqual(["loading"]);
  });

  test("a release for an unknown replica is harmless", () => {
    const { dispatcher } = setup();
    expect(dispatcher.release("nobody")).toEqual([]);
  });
});

describe("Dispatcher deadlines and cancellation", () => {
  function fullWithQueue(deadlines: number[]) {
    const context = setup();
    context.dispatcher.upsertReplica("a", state({ maxConcurrency: 1 }));
    dispatched(context.dispatcher.submit({ model: "m" }, "running", 99_999));
    deadlines.forEach((deadline, index) => {
      context.dispatcher.submit({ model: "m" }, `q${index}`, deadline);
    });
    return context;
  }

  test("expire() returns exactly the requests past their deadline, oldest first, and keeps the rest in order", () => {
    const { clock, dispatcher } = fullWithQueue([1_500, 3_000, 1_200, 2_500, 1_800]);
    clock.now = 2_000;
    expect(dispatcher.expire()).toEqual(["q0", "q2", "q4"]);
    expect(dispatcher.queueLength).toBe(2);
    expect(dispatcher.expire()).toEqual([]);
    expect(dispatcher.release("a").map((each) => each.payload)).toEqual(["q1"]);
    expect(dispatcher.release("a").map((each) => each.payload)).toEqual(["q3"]);
  });

  test("expire() before any deadline takes nothing", () => {
    const { dispatcher } = fullWithQueue([1_500, 3_000]);
    expect(dispatcher.expire()).toEqual([]);
    expect(dispatcher.queueLength).toBe(2);
  });

  test("nextDeadline is the earliest deadline among waiting requests, undefined when none wait", () => {
    const { clock, dispatcher } = fullWithQueue([3_000, 1_500, 2_500]);
    expect(dispatcher.nextDeadline()).toBe(1_500);
    clock.now = 2_000;
    dispatcher.expire();
    expect(dispatcher.nextDeadline()).toBe(2_500);
    clock.now = 5_000;
    dispatcher.expire();
    expect(dispatcher.nextDeadline()).toBeUndefined();
    expect(setup().dispatcher.nextDeadline()).toBeUndefined();
  });

  test("cancel takes a waiting request out: it is never dispatched and frees its place in the queue", () => {
    const { dispatcher } = fullWithQueue([9_000, 9_000, 9_000]);
    expect(dispatcher.cancel((payload) => payload === "q1")).toBe("q1");
    expect(dispatcher.queueLength).toBe(2);
    expect(dispatcher.cancel((payload) => payload === "q1")).toBeUndefined();
    expect(dispatcher.cancel((payload) => payload === "running")).toBeUndefined();
    expect(dispatcher.release("a").map((each) => each.payload)).toEqual(["q0"]);
    expect(dispatcher.release("a").map((each) => each.payload)).toEqual(["q2"]);
    expect(dispatcher.release("a")).toEqual([]);
  });
});

describe("Dispatcher replicas", () => {
  test("upsertReplica with more capacity hands the new slots to waiting requests at once, in order", () => {
    const { clock, dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1 }));
    dispatched(dispatcher.submit({ model: "m" }, "r1", 99_999));
    dispatcher.submit({ model: "m" }, "r2", 99_999);
    dispatcher.submit({ model: "m" }, "r3", 99_999);
    dispatcher.submit({ model: "m" }, "r4", 99_999);
    clock.now = 1_250;
    const sent = dispatcher.upsertReplica("a", state({ maxConcurrency: 3 }));
    expect(sent).toEqual([
      { address: "a", payload: "r2", expect: "load", queuedMs: 250 },
      { address: "a", payload: "r3", expect: "load", queuedMs: 250 },
    ]);
    expect(inFlight(dispatcher, "a")).toBe(3);
    expect(dispatcher.queueLength).toBe(1);
  });

  test("a replica that joins takes waiting requests; a draining one does not", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1 }));
    dispatched(dispatcher.submit({ model: "m" }, "r1", 99_999));
    dispatcher.submit({ model: "m" }, "r2", 99_999);
    expect(dispatcher.upsertReplica("draining", state({ maxConcurrency: 2 }), { draining: true })).toEqual(
      [],
    );
    expect(dispatcher.upsertReplica("b", state({ maxConcurrency: 2, loaded: ["m"] }))).toEqual([
      { address: "b", payload: "r2", expect: "hit", queuedMs: 0 },
    ]);
  });

  test("a lower capacity stops new dispatches until in-flight work drops below it", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 3 }));
    for (const payload of ["r1", "r2", "r3"]) dispatched(dispatcher.submit({ model: "m" }, payload, 99_999));
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1 }));
    expect(dispatcher.submit({ model: "m" }, "r4", 99_999)).toEqual({ kind: "queued" });
    expect(dispatcher.release("a")).toEqual([]);
    expect(dispatcher.release("a")).toEqual([]);
    expect(dispatcher.release("a").map((each) => each.payload)).toEqual(["r4"]);
  });

  test("removeReplica forgets it: no more requests go there, and with none left submit is 503", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 2, loaded: ["m"] }));
    dispatcher.upsertReplica("b", state({ maxConcurrency: 2 }));
    dispatcher.removeReplica("a");
    expect(dispatcher.replicas().map((replica) => replica.address)).toEqual(["b"]);
    expect(dispatched(dispatcher.submit({ model: "m" }, "r1", 99_999)).address).toBe("b");
    dispatcher.removeReplica("b");
    expect(refusal(() => dispatcher.submit({ model: "m" }, "r2", 99_999)).status).toBe(503);
    expect(dispatcher.release("b")).toEqual([]);
  });

  test("a removed replica that comes back starts with no requests in flight", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1 }));
    dispatched(dispatcher.submit({ model: "m" }, "r1", 99_999));
    dispatcher.removeReplica("a");
    dispatcher.upsertReplica("a", state({ maxConcurrency: 1 }));
    expect(inFlight(dispatcher, "a")).toBe(0);
    expect(dispatched(dispatcher.submit({ model: "m" }, "r2", 99_999)).address).toBe("a");
  });
});

describe("Dispatcher: properties", () => {
  const ADDRESSES = ["x/0", "x/1", "y/0"] as const;
  const MODELS = ["a", "b", "c"] as const;

  const command = fc.oneof(
    {
      weight: 5,
      arbitrary: fc.record({
        kind: fc.constant("submit" as const),
        model: fc.constantFrom(...MODELS),
        ttl: fc.integer({ min: 1, max: 500 }),
      }),
    },
    { weight: 4, arbitrary: fc.record({ kind: fc.constant("release" as const), pick: fc.nat() }) },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant("upsert" as const),
        address: fc.constantFrom(...ADDRESSES),
        maxConcurrency: fc.integer({ min: 1, max: 4 }),
        holds: fc.subarray([...MODELS]),
        draining: fc.boolean(),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ kind: fc.constant("remove" as const), address: fc.constantFrom(...ADDRESSES) }),
    },
    {
      weight: 2,
      arbitrary: fc.record({ kind: fc.constant("tick" as const), ms: fc.integer({ min: 0, max: 300 }) }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("cancel" as const), pick: fc.nat() }) },
  );

  test("capacity and queue bounds hold, and every request ends exactly once: dispatched, queued, expired, cancelled or refused", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 4 }),
        fc.array(command, { maxLength: 80 }),
        (maxQueue, commands) => {
          const clock = { now: 0 };
          const dispatcher = new Dispatcher<number>({
            policy: baselinePolicy,
            maxQueue,
            now: () => clock.now,
          });
          /** The model of the world: what each request became, and what runs where. */
          const outcome = new Map<number, string>();
          const capacity = new Map<string, number>();
          const running = new Map<string, number[]>();
          let submitted = 0;

          const settle = (payload: number, how: string) => {
            expect(
              outcome.has(payload),
              `request ${payload} ended twice (${outcome.get(payload)}, ${how})`,
            ).toBe(false);
            outcome.set(payload, how);
          };
          const onDispatch = (sent: readonly Dispatch<number>[]) => {
            for (const each of sent) {
              settle(each.payload, "dispatched");
              const list = running.get(each.address);
              expect(list, `dispatched to unknown replica ${each.address}`).toBeDefined();
              list?.push(each.payload);
              expect(list?.length ?? 0).toBeLessThanOrEqual(capacity.get(each.address) ?? 0);
              expect(
                dispatcher.replicas().find((replica) => replica.address === each.address)?.draining,
              ).toBe(false);
            }
          };

          for (const step of commands) {
            switch (step.kind) {
              case "submit": {
                const payload = submitted++;
                const result = dispatcher.submit({ model: step.model }, payload, clock.now + step.ttl);
                if (result.kind === "dispatched") onDispatch([result.dispatch]);
                else if (result.kind !== "queued") {
                  expect(result.error).toBeInstanceOf(SwitchyardError);
                  expect(result.error.status).toBe(
                    result.kind === "queue_full" ? 429 : result.kind === "not_found" ? 404 : 503,
                  );
                  settle(payload, "refused");
                }
                break;
              }
              case "release": {
                const busy = [...running].filter(([, list]) => list.length > 0);
                const chosen = busy[step.pick % Math.max(1, busy.length)];
                if (chosen === undefined) break;
                chosen[1].shift();
                onDispatch(dispatcher.release(chosen[0]));
                break;
              }
              case "upsert": {
                capacity.set(step.address, step.maxConcurrency);
                if (!running.has(step.address)) running.set(step.address, []);
                const replicaState = state({ maxConcurrency: step.maxConcurrency, loaded: step.holds });
                onDispatch(dispatcher.upsertReplica(step.address, replicaState, { draining: step.draining }));
                break;
              }
              case "remove": {
                // What ran there is the caller's to retry or fail; it was dispatched once, and stays so.
                dispatcher.removeReplica(step.address);
                capacity.delete(step.address);
                running.delete(step.address);
                break;
              }
              case "tick": {
                clock.now += step.ms;
                for (const payload of dispatcher.expire()) settle(payload, "expired");
                break;
              }
              case "cancel": {
                const candidates = [...Array(submitted).keys()].filter((payload) => !outcome.has(payload));
                const target = candidates[step.pick % Math.max(1, candidates.length)];
                if (target === undefined) break;
                const cancelled = dispatcher.cancel((payload) => payload === target);
                expect(cancelled).toBe(target);
                settle(target, "cancelled");
                break;
              }
            }
            expect(dispatcher.queueLength).toBeLessThanOrEqual(maxQueue);
            for (const replica of dispatcher.replicas()) {
              expect(replica.inFlight).toBe(running.get(replica.address)?.length);
            }
          }

          // Whatever has not ended is still waiting: draining the queue finds exactly those, once each.
          const waiting = [...Array(submitted).keys()].filter((payload) => !outcome.has(payload));
          expect(dispatcher.queueLength).toBe(waiting.length);
          clock.now = Number.POSITIVE_INFINITY;
          expect(dispatcher.expire()).toEqual(waiting);
          expect(dispatcher.queueLength).toBe(0);
        },
      ),
      { numRuns: 300 },
    );
  });
});

describe("Dispatcher.adopt (a direct hit its replica's relay took)", () => {
  test("takes a slot as a dispatch would, so that the next request queues, and the release frees it", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a/0", state({ maxConcurrency: 1, loaded: ["resnet"] }));
    expect(dispatcher.adopt("a/0", { model: "resnet" })).toBe(true);
    expect(inFlight(dispatcher, "a/0")).toBe(1);
    expect(dispatcher.submit({ model: "resnet" }, "r1", 9_999).kind).toBe("queued");
    expect(dispatcher.release("a/0", { model: "resnet" }).map((each) => each.payload)).toEqual(["r1"]);
    expect(dispatcher.demand.ratePerSecond("resnet", 1_000)).toBeGreaterThan(0);
  });

  test("refuses an unknown or draining replica, taking nothing", () => {
    const { dispatcher } = setup();
    dispatcher.upsertReplica("a/0", state({ maxConcurrency: 1, loaded: ["resnet"] }));
    expect(dispatcher.adopt("b/0", { model: "resnet" })).toBe(false);
    dispatcher.setDraining("a/0", true);
    expect(dispatcher.adopt("a/0", { model: "resnet" })).toBe(false);
    expect(inFlight(dispatcher, "a/0")).toBe(0);
  });
});

test("Dispatcher.adopt on a replica its view does not show holding the model takes it as the load it is", () => {
  const { dispatcher } = setup();
  dispatcher.upsertReplica("a/0", state({ maxConcurrency: 2, loaded: [] }));
  expect(dispatcher.adopt("a/0", { model: "resnet" })).toBe(true);
  // A load the dispatcher expects there (its copy test and coalescing policies see it), one slot taken.
  const view = dispatcher.replica("a/0");
  expect(view?.pendingLoads?.map((load) => load.model)).toEqual(["resnet"]);
  expect(view?.inFlight).toBe(1);
});
