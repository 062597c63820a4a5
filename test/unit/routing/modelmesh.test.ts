import { describe, expect, test } from "vitest";
import { MODELMESH_SCALE_UP_RPM, modelMeshPolicy } from "../../../shared/routing/modelmesh.ts";
import { contextAt, GiB, model, poolOf, replica, targetOf, waiting } from "./fixtures.ts";

describe("modelMeshPolicy.route", () => {
  test("a hit goes to the copy with the fewest requests in flight", () => {
    const replicas = [
      replica("busy-copy", { busy: 3, loaded: [model("m")] }),
      replica("idle-copy", { busy: 1, loaded: [model("m")] }),
      replica("empty"),
    ];
    expect(modelMeshPolicy.route({ model: "m" }, poolOf(replicas), contextAt(0))).toEqual({
      kind: "dispatch",
      address: "idle-copy",
      expect: "hit",
    });
  });

  test("a model still loading is waited for on its loading copy", () => {
    const replicas = [replica("empty"), replica("loading", { loading: [{ name: "m", version: "1" }] })];
    expect(modelMeshPolicy.route({ model: "m" }, poolOf(replicas), contextAt(0))).toEqual({
      kind: "dispatch",
      address: "loading",
      expect: "loading",
    });
  });

  test("every copy busy and the rate below the threshold: the request waits for a copy", () => {
    const replicas = [replica("copy", { busy: 4, loaded: [model("m")] }), replica("empty")];
    const context = contextAt(60_000, { demand: { m: 10 } });
    expect(modelMeshPolicy.route({ model: "m" }, poolOf(replicas), context).kind).toBe("queue");
  });

  test(`above ${MODELMESH_SCALE_UP_RPM} requests a minute per copy, another copy is loaded where none is`, () => {
    const replicas = [replica("copy", { busy: 1, loaded: [model("m")] }), replica("empty")];
    const context = contextAt(60_000, { demand: { m: 40 } }); // 2400 a minute on one copy
    expect(modelMeshPolicy.route({ model: "m" }, poolOf(replicas), context)).toEqual({
      kind: "dispatch",
      address: "empty",
      expect: "load",
    });
  });

  test("a miss ranks instances by free space, then by the LRU age of their idlest model", () => {
    const full = [model("a", { idleMs: 5_000 }), model("b"), model("c")];
    const replicas = [
      replica("full-recent", { loaded: full.map((each) => ({ ...each, idleMs: 10 })) }),
      replica("full-stale", { loaded: full }),
      replica("half", { loaded: [model("d", { bytes: 4 * GiB })] }),
    ];
    expect(targetOf(modelMeshPolicy.route({ model: "m" }, poolOf(replicas), contextAt(0)))).toBe("half");
    const fullOnly = replicas.slice(0, 2);
    expect(targetOf(modelMeshPolicy.route({ model: "m" }, poolOf(fullOnly), contextAt(0)))).toBe(
      "full-stale",
    );
  });

  test("no replica free: the miss waits; every replica draining: unavailable", () => {
    expect(
      modelMeshPolicy.route({ model: "m" }, poolOf([replica("a", { busy: 4 })]), contextAt(0)).kind,
    ).toBe("queue");
    expect(
      modelMeshPolicy.route({ model: "m" }, poolOf([replica("a", { draining: true })]), contextAt(0)).kind,
    ).toBe("unavailable");
  });
});

describe("modelMeshPolicy.pickQueued", () => {
  test("a freed copy takes the oldest request for its model; a miss nobody holds goes anywhere", () => {
    const holder = replica("holder", { loaded: [model("m")] });
    const other = replica("other", { loaded: [model("x")] });
    const pool = [holder, other];
    const queue = [waiting("m", 0), waiting("cold", 5), waiting("m", 10)];
    expect(modelMeshPolicy.pickQueued(holder, poolOf(pool, queue), contextAt(20))).toBe(0);
    expect(modelMeshPolicy.pickQueued(other, poolOf(pool, queue), contextAt(20))).toBe(1);
    expect(modelMeshPolicy.pickQueued(other, poolOf(pool, [waiting("m", 0)]), contextAt(20))).toBe(-1);
  });
});
