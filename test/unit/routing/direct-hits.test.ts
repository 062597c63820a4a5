import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { DIRECT_PERMIT_MS, directPermit, directRefusal } from "../../../shared/routing/direct-hits.ts";
import { replicaState } from "../../support/replica-state.ts";
import { model, replica } from "./fixtures.ts";

describe("directPermit: what a release's answer gives the relay", () => {
  const holder = (fields: Parameters<typeof replica>[1] = {}) =>
    replica("a/0", { loaded: [model("m")], ...fields });

  test("a holder with a free slot while nothing waits: a permit for the policy's capacity", () => {
    expect(directPermit({ request: { model: "m" }, replica: holder(), waiting: 0, capacity: 4 })).toEqual({
      capacity: 4,
    });
  });

  test("none while anything waits, for a policy without direct hits, or for a replica that cannot take the hit", () => {
    const request = { model: "m" };
    expect(directPermit({ request, replica: holder(), waiting: 1, capacity: 4 })).toBeUndefined();
    expect(directPermit({ request, replica: holder(), waiting: 0, capacity: undefined })).toBeUndefined();
    expect(directPermit({ request, replica: undefined, waiting: 0, capacity: 4 })).toBeUndefined();
    expect(
      directPermit({ request, replica: holder({ draining: true }), waiting: 0, capacity: 4 }),
    ).toBeUndefined();
    // Its last slot just went to a request that waited: that slot is not free.
    expect(directPermit({ request, replica: holder({ busy: 4 }), waiting: 0, capacity: 4 })).toBeUndefined();
    expect(
      directPermit({ request: { model: "other" }, replica: holder(), waiting: 0, capacity: 4 }),
    ).toBeUndefined();
    expect(
      directPermit({ request: { model: "m", version: "2" }, replica: holder(), waiting: 0, capacity: 4 }),
    ).toBeUndefined();
    const failing = holder({ failed: [{ name: "m", version: "1", reason: "ejected" }] });
    expect(directPermit({ request, replica: failing, waiting: 0, capacity: 4 })).toBeUndefined();
  });
});

describe("directRefusal: whether the relay takes a hit without asking", () => {
  const state = replicaState({ loaded: ["m"], maxConcurrency: 2 });
  const permit = { capacity: 2, at: 1_000 };
  const ask = (fields: Partial<Parameters<typeof directRefusal>[0]> = {}) =>
    directRefusal({ request: { model: "m" }, state, inFlight: 0, permit, now: 1_000, ...fields });

  test("admitted under a fresh permit, for a model its agent holds, with a slot free", () => {
    expect(ask()).toBeUndefined();
    expect(
      ask({ request: { model: "m", version: "1" }, inFlight: 1, now: 1_000 + DIRECT_PERMIT_MS }),
    ).toBeUndefined();
  });

  test("refused, saying why, without a permit, after it ran out, or where the replica cannot take it now", () => {
    expect(ask({ permit: undefined })).toBe("no permit");
    expect(ask({ now: 1_001 + DIRECT_PERMIT_MS })).toBe("permit expired");
    expect(ask({ state: undefined })).toBe("no state");
    expect(ask({ request: { model: "other" } })).toBe("not loaded");
    expect(ask({ request: { model: "m", version: "2" } })).toBe("not loaded");
    expect(ask({ state: { ...state, failed: [{ name: "m", version: "1", reason: "oom" }] } })).toBe(
      "failed here",
    );
    expect(ask({ inFlight: 2 })).toBe("no free slot");
  });

  test("never more runs out at once than both the policy's capacity and the replica's concurrency allow", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 1, max: 8 }),
        fc.integer({ min: 0, max: 10 }),
        (capacity, maxConcurrency, inFlight) => {
          const admitted =
            directRefusal({
              request: { model: "m" },
              state: { ...state, maxConcurrency },
              inFlight,
              permit: { capacity, at: 0 },
              now: 0,
            }) === undefined;
          expect(admitted).toBe(inFlight < Math.min(capacity, maxConcurrency));
        },
      ),
    );
  });
});
