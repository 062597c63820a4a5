import { describe, expect, test } from "vitest";
import type { CacheEntryView } from "../../../shared/cache/admission.ts";
import { admitInOrder } from "../../../shared/cache/admit-in-order.ts";

// The admission order the agent's ModelCache and the simulator's replicas share.

const idle = (key: string, lastUsedAt: number, bytes = 1): CacheEntryView => ({
  key,
  bytes,
  lastUsedAt,
  inFlight: 0,
  state: "loaded",
});

describe("admitInOrder", () => {
  test("admits in arrival order, each planned against what the earlier admissions left", () => {
    const entries = [idle("old", 1), idle("newer", 2)];
    const outcomes = admitInOrder(
      entries,
      [
        { key: "a", bytes: 1 },
        { key: "b", bytes: 1 },
      ],
      {
        maxModels: 2,
        maxBytes: Infinity,
      },
    );
    expect(outcomes).toEqual([
      { key: "a", kind: "admit", evict: ["old"] },
      { key: "b", kind: "admit", evict: ["newer"] },
    ]);
  });

  test("the first that must wait holds up the rest, even if a later one would fit", () => {
    const pinned: CacheEntryView = { ...idle("busy", 1, 3), inFlight: 1 };
    const outcomes = admitInOrder(
      [pinned],
      [
        { key: "big", bytes: 2 },
        { key: "small", bytes: 1 },
      ],
      {
        maxModels: 5,
        maxBytes: 4,
      },
    );
    expect(outcomes).toEqual([]);
  });

  test("a model that can never fit is rejected and the line moves on; an admitted one counts as loading", () => {
    const outcomes = admitInOrder(
      [],
      [
        { key: "huge", bytes: 10 },
        { key: "a", bytes: 2 },
        { key: "b", bytes: 2 },
      ],
      {
        maxModels: 5,
        maxBytes: 3,
      },
    );
    expect(outcomes.map((outcome) => [outcome.key, outcome.kind])).toEqual([
      ["huge", "reject"],
      ["a", "admit"],
    ]);
  });
});
