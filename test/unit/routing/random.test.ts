import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { randomPolicy } from "../../../shared/routing/random.ts";
import { contextAt, model, poolOf, replica, targetOf } from "./fixtures.ts";

describe("randomPolicy", () => {
  test("no replica, or every replica draining: unavailable", () => {
    expect(randomPolicy.route({ model: "m" }, poolOf([]), contextAt(0)).kind).toBe("unavailable");
    const draining = [replica("a", { draining: true })];
    expect(randomPolicy.route({ model: "m" }, poolOf(draining), contextAt(0)).kind).toBe("unavailable");
  });

  test("picks among the replicas with a free slot only, by the context's draw", () => {
    const replicas = [
      replica("full", { busy: 4 }),
      replica("a"),
      replica("draining", { draining: true }),
      replica("b"),
    ];
    expect(targetOf(randomPolicy.route({ model: "m" }, poolOf(replicas), contextAt(0, { draws: [0] })))).toBe(
      "a",
    );
    expect(
      targetOf(randomPolicy.route({ model: "m" }, poolOf(replicas), contextAt(0, { draws: [0.99] }))),
    ).toBe("b");
  });

  test("blind to models: says what the replica will find, but does not prefer a holder", () => {
    const replicas = [replica("empty"), replica("holder", { loaded: [model("m")] })];
    expect(randomPolicy.route({ model: "m" }, poolOf(replicas), contextAt(0, { draws: [0] }))).toEqual({
      kind: "dispatch",
      address: "empty",
      expect: "load",
    });
  });

  test("every replica full: the request waits, and a freed slot takes the oldest", () => {
    expect(randomPolicy.route({ model: "m" }, poolOf([replica("a", { busy: 4 })]), contextAt(0)).kind).toBe(
      "queue",
    );
    expect(
      randomPolicy.pickQueued(
        replica("a"),
        poolOf([replica("a")], [{ request: { model: "x" }, enqueuedAt: 1 }]),
        contextAt(2),
      ),
    ).toBe(0);
    expect(
      randomPolicy.pickQueued(
        replica("a", { draining: true }),
        poolOf([replica("a", { draining: true })], [{ request: { model: "x" }, enqueuedAt: 1 }]),
        contextAt(2),
      ),
    ).toBe(-1);
    expect(randomPolicy.pickQueued(replica("a"), poolOf([replica("a")], []), contextAt(2))).toBe(-1);
  });

  test("whatever the draw, the target has a free slot and is not draining", () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ busy: fc.integer({ min: 0, max: 4 }), draining: fc.boolean() }), {
          minLength: 1,
          maxLength: 6,
        }),
        fc.double({ min: 0, max: 0.999_999, noNaN: true }),
        (fields, draw) => {
          const replicas = fields.map((each, index) => replica(`r${index}`, each));
          const decision = randomPolicy.route(
            { model: "m" },
            poolOf(replicas),
            contextAt(0, { draws: [draw] }),
          );
          if (decision.kind !== "dispatch") return;
          const target = replicas.find((each) => each.address === decision.address);
          expect(target?.draining).toBe(false);
          expect(target?.inFlight).toBeLessThan(4);
        },
      ),
    );
  });
});
