import fc from "fast-check";
import { describe, expect, test } from "vitest";
import {
  DIRECT_PERMIT_MS,
  directPermit,
  directRefusal,
  opensDirectPath,
} from "../../../shared/routing/direct-hits.ts";
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
    // It is loading something, reported or expected: a load may evict the model before the relay knows.
    expect(
      directPermit({
        request,
        replica: holder({ loading: [{ name: "n", version: "1" }] }),
        waiting: 0,
        capacity: 4,
      }),
    ).toBeUndefined();
    expect(
      directPermit({
        request,
        replica: holder({ pendingLoads: [{ model: "n", since: 0 }] }),
        waiting: 0,
        capacity: 4,
      }),
    ).toBeUndefined();
    const failing = holder({ failed: [{ name: "m", version: "1", reason: "ejected" }] });
    expect(directPermit({ request, replica: failing, waiting: 0, capacity: 4 })).toBeUndefined();
  });
});

describe("directRefusal: whether the relay takes a hit without asking", () => {
  const state = replicaState({ loaded: ["m"], maxConcurrency: 2 });
  const permit = { capacity: 2, at: 1_000 };
  const ask = (fields: Partial<Parameters<typeof directRefusal>[0]> = {}) =>
    directRefusal({ request: { model: "m" }, state, running: [], permit, now: 1_000, ...fields });

  test("admitted under a fresh permit, for a model its agent holds, with a slot free", () => {
    expect(ask()).toBeUndefined();
    expect(
      ask({ request: { model: "m", version: "1" }, running: ["m"], now: 1_000 + DIRECT_PERMIT_MS }),
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
    expect(ask({ running: ["m", "m"] })).toBe("no free slot");
    // A run out there for a model the state does not show loaded is a load, which may evict this one.
    expect(ask({ running: ["other"] })).toBe("a load is under way");
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
              running: Array.from({ length: inFlight }, () => "m"),
              permit: { capacity, at: 0 },
              now: 0,
            }) === undefined;
          expect(admitted).toBe(inFlight < Math.min(capacity, maxConcurrency));
        },
      ),
    );
  });
});

describe("opensDirectPath: whether a grant lets the Worker try the replica directly next time", () => {
  const holder = replica("a/0", { loaded: [model("m")], hints: ["lora-1"] });
  const open = (fields: Partial<Parameters<typeof opensDirectPath>[0]> = {}) =>
    opensDirectPath({
      policy: { directHits: true },
      expect: "hit",
      request: { model: "m" },
      replica: holder,
      waiting: 0,
      ...fields,
    });

  test("a hit granted under a policy with direct hits while nothing waits, on a replica with the request's hint", () => {
    expect(open()).toBe(true);
    expect(open({ request: { model: "m", hint: "lora-1" } })).toBe(true);
  });

  test("not under an anchor's policy, for a load, while anything waits, or where the hint is not advertised", () => {
    expect(open({ policy: {} })).toBe(false);
    expect(open({ expect: "load" })).toBe(false);
    expect(open({ expect: "loading" })).toBe(false);
    expect(open({ waiting: 1 })).toBe(false);
    expect(open({ replica: undefined })).toBe(false);
    expect(open({ request: { model: "m", hint: "lora-2" } })).toBe(false);
  });
});
