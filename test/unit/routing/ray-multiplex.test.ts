import { describe, expect, test } from "vitest";
import {
  RAY_MATCHING_TIMEOUT_MS,
  RAY_MAX_ONGOING_REQUESTS,
  rayMultiplexPolicy,
} from "../../../shared/routing/ray-multiplex.ts";
import { contextAt, model, poolOf, replica, targetOf, waiting } from "./fixtures.ts";

const route = (replicas: ReturnType<typeof replica>[], draws: number[] = [0, 0]) =>
  rayMultiplexPolicy.route({ model: "m" }, poolOf(replicas), contextAt(0, { draws }));

describe("rayMultiplexPolicy.route", () => {
  test("a replica accepts up to max_ongoing_requests (5), whatever its own concurrency", () => {
    expect(RAY_MAX_ONGOING_REQUESTS).toBe(5);
    expect(rayMultiplexPolicy.capacity?.(replica("a", { maxConcurrency: 1 }))).toBe(5);
    const holder = replica("holder", { busy: 4, loaded: [model("m")] }); // 4 slots all busy, yet accepts
    expect(targetOf(route([holder]))).toBe("holder");
  });

  test("replicas holding the model come first", () => {
    const replicas = [replica("empty"), replica("holder", { busy: 2, loaded: [model("m")] })];
    expect(route(replicas)).toEqual({ kind: "dispatch", address: "holder", expect: "hit" });
  });

  test("a replica loading the model counts as holding it (Ray pushes loading model ids)", () => {
    const replicas = [replica("empty"), replica("loading", { loading: [{ name: "m", version: "1" }] })];
    expect(route(replicas)).toEqual({ kind: "dispatch", address: "loading", expect: "loading" });
  });

  test("no holder: the replicas with the fewest models, the shorter queue of two", () => {
    const replicas = [
      replica("two", { loaded: [model("x"), model("y")] }),
      replica("one-busy", { busy: 3, loaded: [model("z")] }),
      replica("one-idle", { busy: 1, loaded: [model("w")] }),
    ];
    expect(targetOf(route(replicas))).toBe("one-idle");
  });

  test("all holders saturated: the request waits, even with idle replicas elsewhere", () => {
    const replicas = [
      replica("holder", { busy: RAY_MAX_ONGOING_REQUESTS, loaded: [model("m")] }),
      replica("idle"),
    ];
    expect(route(replicas).kind).toBe("queue");
  });

  test("draining replicas are not candidates; all draining: unavailable", () => {
    const replicas = [replica("holder", { draining: true, loaded: [model("m")] }), replica("other")];
    expect(targetOf(route(replicas))).toBe("other");
    expect(route([replica("d", { draining: true })]).kind).toBe("unavailable");
  });
});

describe("rayMultiplexPolicy.pickQueued", () => {
  const pool = [
    replica("holder", { loaded: [model("m"), model("n")] }),
    replica("light", { loaded: [model("x")] }),
  ];

  test("a freed replica first takes the oldest request for a model it reports", () => {
    const queue = [waiting("other", 0), waiting("m", 10), waiting("m", 20)];
    const [holder] = pool;
    if (holder === undefined) throw new Error("fixture");
    expect(rayMultiplexPolicy.pickQueued(holder, poolOf(pool, queue), contextAt(100))).toBe(1);
  });

  test("else the oldest it is a candidate for: any, when it is among the fewest-models replicas", () => {
    const light = pool[1];
    if (light === undefined) throw new Error("fixture");
    const queue = [waiting("other", 0), waiting("m", 10)];
    expect(rayMultiplexPolicy.pickQueued(light, poolOf(pool, queue), contextAt(100))).toBe(0);
  });

  test("a replica with more models takes others' requests only once their matching timeout (1-2 s) ran out", () => {
    const holder = pool[0];
    if (holder === undefined) throw new Error("fixture");
    const queue = [waiting("other", 0)];
    const early = contextAt(RAY_MATCHING_TIMEOUT_MS - 1, { draws: [0] });
    expect(rayMultiplexPolicy.pickQueued(holder, poolOf(pool, queue), early)).toBe(-1);
    const late = contextAt(2 * RAY_MATCHING_TIMEOUT_MS, { draws: [0.999] });
    expect(rayMultiplexPolicy.pickQueued(holder, poolOf(pool, queue), late)).toBe(0);
    expect(rayMultiplexPolicy.nextWakeup?.(poolOf(pool, queue), contextAt(500))).toBe(
      2 * RAY_MATCHING_TIMEOUT_MS,
    );
  });

  test("a draining or saturated replica takes nothing", () => {
    const queue = [waiting("m", 0)];
    const draining = replica("d", { draining: true, loaded: [model("m")] });
    expect(rayMultiplexPolicy.pickQueued(draining, poolOf([draining], queue), contextAt(5_000))).toBe(-1);
    const full = replica("f", { busy: RAY_MAX_ONGOING_REQUESTS, loaded: [model("m")] });
    expect(rayMultiplexPolicy.pickQueued(full, poolOf([full], queue), contextAt(5_000))).toBe(-1);
  });
});
