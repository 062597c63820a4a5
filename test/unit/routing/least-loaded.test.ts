import { describe, expect, test } from "vitest";
import { leastLoadedPolicy } from "../../../shared/routing/least-loaded.ts";
import { contextAt, model, poolOf, replica, targetOf } from "./fixtures.ts";

describe("leastLoadedPolicy (power of two choices)", () => {
  const pool = [replica("a", { busy: 3 }), replica("b", { busy: 1 }), replica("c", { busy: 2 })];

  test("of the two sampled replicas, the one with fewer requests in flight", () => {
    // Draws pick a (index 0), then b (index 0 of the remaining two, shifted past a).
    const decision = leastLoadedPolicy.route({ model: "m" }, poolOf(pool), contextAt(0, { draws: [0, 0] }));
    expect(targetOf(decision)).toBe("b");
    // a and c: c is lighter.
    expect(
      targetOf(leastLoadedPolicy.route({ model: "m" }, poolOf(pool), contextAt(0, { draws: [0, 0.9] }))),
    ).toBe("c");
  });

  test("blind to models: a lighter replica without the model beats a busier holder", () => {
    const replicas = [replica("holder", { busy: 2, loaded: [model("m")] }), replica("empty")];
    expect(leastLoadedPolicy.route({ model: "m" }, poolOf(replicas), contextAt(0, { draws: [0] }))).toEqual({
      kind: "dispatch",
      address: "empty",
      expect: "load",
    });
  });

  test("when the lighter of the two is full, the request waits (even if an unsampled replica is free)", () => {
    const replicas = [replica("a", { busy: 4 }), replica("b", { busy: 4 }), replica("free")];
    expect(
      leastLoadedPolicy.route({ model: "m" }, poolOf(replicas), contextAt(0, { draws: [0, 0] })).kind,
    ).toBe("queue");
  });

  test("draining replicas are never sampled; none left: unavailable", () => {
    const replicas = [replica("d", { draining: true }), replica("a", { busy: 3 })];
    expect(targetOf(leastLoadedPolicy.route({ model: "m" }, poolOf(replicas), contextAt(0)))).toBe("a");
    expect(
      leastLoadedPolicy.route({ model: "m" }, poolOf([replica("d", { draining: true })]), contextAt(0)).kind,
    ).toBe("unavailable");
  });
});
