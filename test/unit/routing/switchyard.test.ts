import { describe, expect, test } from "vitest";
import { LAST_RESORT_WAIT_MS, MAX_WAIT_MS, switchyardPolicy } from "../../../shared/routing/switchyard.ts";
import type { QueuedView, ReplicaView, RouteRequest, RoutingContext } from "../../../shared/routing/types.ts";
import { contextAt, model, poolOf, replica, targetOf, timings, waiting } from "./fixtures.ts";

const route = (
  request: RouteRequest,
  replicas: ReplicaView[],
  context: RoutingContext = contextAt(0),
  queue: QueuedView[] = [],
) => switchyardPolicy.route(request, poolOf(replicas, queue), context);

/** Three models resident and in demand: evicting any of them harms someone. */
const hotReplica = (address: string, names: string[], fields: Parameters<typeof replica>[1] = {}) =>
  replica(address, {
    loaded: names.map((name, index) => model(name, { idleMs: 100 * (index + 1) })),
    timings: timings(names),
    ...fields,
  });

describe("switchyardPolicy.route: the model is held somewhere", () => {
  test("a holder with a free slot runs it now: the busiest such holder, so a spare copy can go idle", () => {
    const replicas = [
      replica("idle-copy", { loaded: [model("m")] }),
      replica("busy-copy", { busy: 3, loaded: [model("m")] }),
      replica("empty"),
    ];
    expect(route({ model: "m" }, replicas)).toEqual({
      kind: "dispatch",
      address: "busy-copy",
      expect: "hit",
    });
    expect(targetOf(route({ model: "m" }, [...replicas].reverse()))).toBe("busy-copy");
  });

  test("all holders saturated, short queue: waiting for a copy beats loading another", () => {
    const replicas = [
      hotReplica("holder", ["m"], { busy: 4 }),
      replica("empty", { timings: timings(["m"]) }),
    ];
    const context = contextAt(60_000, { demand: { m: 5 } });
    expect(route({ model: "m" }, replicas, context, [waiting("m", 59_990)]).kind).toBe("queue");
  });

  test("all holders saturated with a long queue: another copy, where the eviction harms least", () => {
    const queue = Array.from({ length: 400 }, (_, index) => waiting("m", 50_000 + index));
    const replicas = [
      hotReplica("holder", ["m"], { busy: 4 }),
      hotReplica("hot", ["a", "b", "c"]),
      replica("room", { loaded: [model("d")], timings: timings(["m", "d"]) }),
    ];
    const context = contextAt(60_000, { demand: { m: 70, a: 20, b: 20, c: 20, d: 1 } });
    expect(route({ model: "m" }, replicas, context, queue)).toEqual({
      kind: "dispatch",
      address: "room",
      expect: "load",
    });
  });

  test("a demand its copies cannot take gets another copy before the queue builds", () => {
    const replicas = [hotReplica("holder", ["m"], { busy: 4 }), replica("room", { timings: timings(["m"]) })];
    // 100 requests a second of 50 ms need 5 slots; one copy has 4.
    const context = contextAt(60_000, { demand: { m: 100 } });
    expect(targetOf(route({ model: "m" }, replicas, context, [waiting("m", 59_999)]))).toBe("room");
  });
});

describe("switchyardPolicy.route: hints and failures", () => {
  test("a holder that advertises the request's hint comes first, and wins a load among equals", () => {
    const holders = [
      replica("plain", { busy: 2, loaded: [model("m")] }),
      replica("lora", { hints: ["lora-7"], loaded: [model("m")] }),
    ];
    expect(targetOf(route({ model: "m", hint: "lora-7" }, holders))).toBe("lora");
    expect(targetOf(route({ model: "m" }, holders))).toBe("plain");
    const empty = [replica("a"), replica("b", { hints: ["lora-7"] })];
    expect(targetOf(route({ model: "m", hint: "lora-7" }, empty))).toBe("b");
    expect(targetOf(route({ model: "m" }, empty))).toBe("a");
  });

  test("a holder where the model failed (a failed load, an ejection) is passed over for a healthy one", () => {
    const failed = [{ name: "m", version: "1", reason: "taken out of routing" }];
    const replicas = [replica("ejected", { loaded: [model("m")], failed }), replica("room")];
    expect(route({ model: "m" }, replicas)).toEqual({ kind: "dispatch", address: "room", expect: "load" });
  });

  test("a model that failed everywhere is still tried, even while the pool is busy: the client gets the error", () => {
    const failed = [{ name: "m", version: "1", reason: "not an ONNX file" }];
    const replicas = [replica("a", { busy: 1, failed }), replica("b", { busy: 1, failed })];
    expect(targetOf(route({ model: "m" }, replicas))).toBe("a");
    const holders = [replica("a", { busy: 1, loaded: [model("m")], failed })];
    expect(route({ model: "m" }, holders)).toEqual({ kind: "dispatch", address: "a", expect: "hit" });
  });
});

describe("switchyardPolicy.route: the model is held nowhere", () => {
  test("loaded at once where there is room (nothing evicted)", () => {
    const replicas = [hotReplica("full", ["a", "b", "c"]), replica("room", { loaded: [model("x")] })];
    const context = contextAt(60_000, { demand: { a: 5, b: 5, c: 5, x: 5 } });
    expect(route({ model: "m" }, replicas, context)).toEqual({
      kind: "dispatch",
      address: "room",
      expect: "load",
    });
  });

  test("coalescing: a model loading anywhere is not loaded again; its requests wait holding no slot", () => {
    const loading = replica("loading", { busy: 1, loading: [{ name: "m", version: "1" }] });
    expect(route({ model: "m" }, [loading, replica("room")]).kind).toBe("queue");
    const pending = replica("pending", { busy: 1, pendingLoads: [{ model: "m", since: 0 }] });
    expect(route({ model: "m" }, [pending, replica("room")], contextAt(10)).kind).toBe("queue");
  });

  test("a single request does not evict models in demand: it waits", () => {
    const replicas = [hotReplica("a", ["a1", "a2", "a3"]), hotReplica("b", ["b1", "b2", "b3"])];
    const demand = { a1: 10, a2: 10, a3: 10, b1: 10, b2: 10, b3: 10, m: 0.5 };
    const context = contextAt(60_000, { demand });
    // Something runs elsewhere, so an answer will offer the queue a slot again.
    replicas[0] = { ...(replicas[0] as ReplicaView), inFlight: 1 };
    expect(route({ model: "m" }, replicas, context).kind).toBe("queue");
  });

  test("an idle pool loads anyway: nothing would offer the queue a slot again", () => {
    const replicas = [hotReplica("a", ["a1", "a2", "a3"])];
    const context = contextAt(60_000, { demand: { a1: 10, a2: 10, a3: 10 } });
    expect(targetOf(route({ model: "m" }, replicas, context))).toBe("a");
  });

  test("draining replicas take nothing; all draining: unavailable", () => {
    const replicas = [replica("holder", { draining: true, loaded: [model("m")] }), replica("room")];
    expect(route({ model: "m" }, replicas)).toEqual({ kind: "dispatch", address: "room", expect: "load" });
    expect(route({ model: "m" }, [replica("d", { draining: true })]).kind).toBe("unavailable");
  });
});

describe("switchyardPolicy.pickQueued", () => {
  test("a freed slot takes the oldest request for a model it holds, before older ones for other models", () => {
    const holder = hotReplica("holder", ["m", "n"]);
    const queue = [waiting("cold", 0), waiting("n", 10), waiting("m", 5)];
    const context = contextAt(100, { demand: { m: 5, n: 5, cold: 0.1 } });
    expect(switchyardPolicy.pickQueued(holder, poolOf([holder], queue), context)).toBe(2);
  });

  test("bounded wait: a slot does not evict a model in demand for a fresh request, but does once it waited", () => {
    const busy = hotReplica("busy", ["a1", "a2", "a3"], { busy: 1 });
    const free = hotReplica("free", ["b1", "b2", "b3"]);
    const demand = { a1: 10, a2: 10, a3: 10, b1: 1, b2: 1, b3: 1, m: 1 };
    const queue = [waiting("m", 0)];
    const pool = poolOf([busy, free], queue);
    const fresh = contextAt(100, { demand });
    expect(switchyardPolicy.pickQueued(free, pool, fresh)).toBe(-1);
    // Evicting b1 (1 request a second, 2 s loads) costs its next requests about 4 s of waiting.
    const wake = switchyardPolicy.nextWakeup?.(pool, fresh) ?? Infinity;
    expect(wake).toBeGreaterThan(3_000);
    expect(wake).toBeLessThan(MAX_WAIT_MS);
    const before = contextAt(wake - 200, { demand });
    expect(switchyardPolicy.pickQueued(free, pool, before)).toBe(-1);
    const after = contextAt(wake + 200, { demand });
    expect(switchyardPolicy.pickQueued(free, pool, after)).toBe(0);
  });

  test("frequency admission: while the pool is busy, models far more wanted than the newcomer stay", () => {
    const busy = hotReplica("busy", ["a1", "a2", "a3"], { busy: 4 }); // half the pool's slots in use
    const free = hotReplica("free", ["b1", "b2", "b3"]);
    const demand = { a1: 10, a2: 10, a3: 10, b1: 30, b2: 30, b3: 30, m: 1 };
    const queue = [waiting("m", 0)];
    const pool = poolOf([busy, free], queue);
    const late = contextAt(MAX_WAIT_MS + 1, { demand });
    expect(switchyardPolicy.pickQueued(free, pool, late)).toBe(-1);
    expect(switchyardPolicy.nextWakeup?.(pool, late)).toBe(LAST_RESORT_WAIT_MS);
    // Two thirds into the gateway's deadline, it is loaded whatever it evicts rather than left to fail.
    const lastResort = contextAt(LAST_RESORT_WAIT_MS, { demand });
    expect(switchyardPolicy.pickQueued(free, pool, lastResort)).toBe(0);
  });

  test("with slots to spare, the least harmful replica loads it once it waited the bound", () => {
    const light = hotReplica("light", ["a1", "a2", "a3"], { busy: 1 });
    const free = hotReplica("free", ["b1", "b2", "b3"]);
    const demand = { a1: 10, a2: 10, a3: 10, b1: 30, b2: 30, b3: 30, m: 1 };
    const queue = [waiting("m", 0)];
    const pool = poolOf([light, free], queue);
    const late = contextAt(MAX_WAIT_MS + 1, { demand });
    expect(switchyardPolicy.pickQueued(free, pool, late)).toBe(-1);
    expect(switchyardPolicy.pickQueued(light, pool, late)).toBe(0);
  });

  test("a model loading elsewhere is left to that load; a draining replica takes nothing", () => {
    const loader = replica("loader", { busy: 1, loading: [{ name: "m", version: "1" }] });
    const free = replica("free");
    const queue = [waiting("m", 0)];
    const context = contextAt(30_000);
    expect(switchyardPolicy.pickQueued(free, poolOf([loader, free], queue), context)).toBe(-1);
    const draining = replica("d", { draining: true, loaded: [model("m")] });
    expect(switchyardPolicy.pickQueued(draining, poolOf([loader, free, draining], queue), context)).toBe(-1);
  });
});
