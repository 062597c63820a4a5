import { describe, expect, test } from "vitest";
import { falHintsPolicy } from "../../../shared/routing/fal-hints.ts";
import { contextAt, model, poolOf, replica, targetOf } from "./fixtures.ts";

describe("falHintsPolicy", () => {
  test("an exact hint match with a free slot wins", () => {
    const replicas = [replica("other"), replica("match", { hints: ["flux-schnell"] })];
    const decision = falHintsPolicy.route(
      { model: "m", hint: "flux-schnell" },
      poolOf(replicas),
      contextAt(0, { draws: [0] }),
    );
    expect(targetOf(decision)).toBe("match");
  });

  test("the match is exact: a prefix or another hint does not count", () => {
    const replicas = [replica("a", { hints: ["flux"] }), replica("b", { hints: ["flux-dev"] })];
    const decision = falHintsPolicy.route(
      { model: "m", hint: "flux-schnell" },
      poolOf(replicas),
      contextAt(0, { draws: [0] }),
    );
    expect(targetOf(decision)).toBe("a"); // no match: any free runner (the draw picks the first)
  });

  test("without a hint, a runner holding the model matches (runners report their models as hints)", () => {
    const replicas = [replica("empty"), replica("holder", { loaded: [model("m")] })];
    expect(falHintsPolicy.route({ model: "m" }, poolOf(replicas), contextAt(0, { draws: [0] }))).toEqual({
      kind: "dispatch",
      address: "holder",
      expect: "hit",
    });
  });

  test("all matching runners busy: any free runner, without waiting", () => {
    const replicas = [replica("holder", { busy: 4, loaded: [model("m")] }), replica("free")];
    expect(falHintsPolicy.route({ model: "m" }, poolOf(replicas), contextAt(0))).toEqual({
      kind: "dispatch",
      address: "free",
      expect: "load",
    });
  });

  test("a draining matching runner is passed over; every runner busy: the request waits, FIFO", () => {
    const replicas = [replica("holder", { draining: true, loaded: [model("m")] }), replica("free")];
    expect(targetOf(falHintsPolicy.route({ model: "m" }, poolOf(replicas), contextAt(0)))).toBe("free");
    expect(falHintsPolicy.route({ model: "m" }, poolOf([replica("a", { busy: 4 })]), contextAt(0)).kind).toBe(
      "queue",
    );
    const queue = [
      { request: { model: "x" }, enqueuedAt: 1 },
      { request: { model: "m" }, enqueuedAt: 2 },
    ];
    expect(
      falHintsPolicy.pickQueued(
        replica("holder", { loaded: [model("m")] }),
        poolOf([replica("holder", { loaded: [model("m")] })], queue),
        contextAt(3),
      ),
    ).toBe(0);
  });
});
