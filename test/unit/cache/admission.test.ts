import fc from "fast-check";
import { describe, expect, test } from "vitest";
import {
  type CacheEntryView,
  type CacheLimits,
  expiredEntries,
  isEvictable,
  leastRecentlyUsedFirst,
  overflowVictims,
  planAdmission,
  type VictimOrder,
} from "../../../shared/cache/admission.ts";

/** An idle loaded entry unless told otherwise. */
const entry = (key: string, fields: Partial<CacheEntryView> = {}): CacheEntryView => ({
  key,
  bytes: 10,
  lastUsedAt: 0,
  inFlight: 0,
  state: "loaded",
  ...fields,
});

const limits = (fields: Partial<CacheLimits>): CacheLimits => ({
  maxModels: Number.POSITIVE_INFINITY,
  maxBytes: Number.POSITIVE_INFINITY,
  ...fields,
});

const incoming = { key: "new", bytes: 10 };

describe("planAdmission", () => {
  test("admits without evicting while there is room", () => {
    const entries = [entry("a"), entry("b")];
    expect(planAdmission(entries, incoming, limits({ maxModels: 3, maxBytes: 30 }))).toEqual({
      kind: "admit",
      evict: [],
    });
  });

  test("by count: evicts the least recently used model, however the entries are listed", () => {
    const entries = [
      entry("b", { lastUsedAt: 20 }),
      entry("a", { lastUsedAt: 10 }),
      entry("c", { lastUsedAt: 30 }),
    ];
    expect(planAdmission(entries, incoming, limits({ maxModels: 3 }))).toEqual({
      kind: "admit",
      evict: ["a"],
    });
    expect(planAdmission(entries, incoming, limits({ maxModels: 2 }))).toEqual({
      kind: "admit",
      evict: ["a", "b"],
    });
  });

  test("by bytes: evicts oldest first until the incoming model fits", () => {
    const entries = [
      entry("old", { lastUsedAt: 1, bytes: 5 }),
      entry("mid", { lastUsedAt: 2, bytes: 50 }),
      entry("new", { lastUsedAt: 3, bytes: 5 }),
    ];
    // 60 held + 20 incoming against 70: freeing "old" (5) is not enough, "mid" (50) then is.
    expect(planAdmission(entries, { key: "x", bytes: 20 }, limits({ maxBytes: 70 }))).toEqual({
      kind: "admit",
      evict: ["old", "mid"],
    });
  });

  test("count and bytes together: evicts until both hold", () => {
    const entries = [
      entry("a", { lastUsedAt: 1, bytes: 40 }),
      entry("b", { lastUsedAt: 2, bytes: 10 }),
      entry("c", { lastUsedAt: 3, bytes: 10 }),
    ];
    // Count alone needs one victim (a); bytes alone would too. With a gone: 2 models + 1, 20 + 50 bytes.
    expect(planAdmission(entries, { key: "x", bytes: 50 }, limits({ maxModels: 3, maxBytes: 70 }))).toEqual({
      kind: "admit",
      evict: ["a"],
    });
    // Bytes now need b gone as well, though count is satisfied after a.
    expect(planAdmission(entries, { key: "x", bytes: 55 }, limits({ maxModels: 3, maxBytes: 70 }))).toEqual({
      kind: "admit",
      evict: ["a", "b"],
    });
  });

  test("skips models with requests in flight, however old", () => {
    const entries = [entry("busy", { lastUsedAt: 1, inFlight: 2 }), entry("idle", { lastUsedAt: 5 })];
    expect(planAdmission(entries, incoming, limits({ maxModels: 2 }))).toEqual({
      kind: "admit",
      evict: ["idle"],
    });
  });

  test("counts loading models against both limits but never evicts them", () => {
    const entries = [
      entry("loading", { state: "loading", bytes: 60, lastUsedAt: 1 }),
      entry("idle", { bytes: 10 }),
    ];
    // Without counting the loading model's 60 bytes, 10 + 30 would fit 70 with nothing evicted.
    expect(planAdmission(entries, { key: "x", bytes: 30 }, limits({ maxBytes: 70 }))).toEqual({
      kind: "wait",
    });
    expect(planAdmission(entries, incoming, limits({ maxModels: 2 }))).toEqual({
      kind: "admit",
      evict: ["idle"],
    });
  });

  test("waits, evicting nothing, when only work in flight stands in the way", () => {
    const entries = [entry("busy", { inFlight: 1, bytes: 50 }), entry("idle", { bytes: 10 })];
    // Evicting "idle" would not be enough: the plan must not evict it for nothing.
    expect(planAdmission(entries, { key: "x", bytes: 55 }, limits({ maxBytes: 100 }))).toEqual({
      kind: "wait",
    });
    expect(planAdmission([entry("busy", { inFlight: 1 })], incoming, limits({ maxModels: 1 }))).toEqual({
      kind: "wait",
    });
  });

  test("never evicts a pinned model, and refuses at once what cannot fit beside the pinned ones", () => {
    const entries = [
      entry("pinned", { bytes: 60, pinned: true, lastUsedAt: 0 }),
      entry("idle", { lastUsedAt: 5 }),
    ];
    expect(planAdmission(entries, incoming, limits({ maxModels: 2 }))).toEqual({
      kind: "admit",
      evict: ["idle"],
    });
    const plan = planAdmission(entries, { key: "big", bytes: 50 }, limits({ maxBytes: 100 }));
    expect(plan.kind).toBe("reject");
    expect(plan.kind === "reject" && plan.reason).toMatch(/beside the 1 model\(s\) pinned here/);
    expect(plan.kind === "reject" && plan.cause).toBe("pins");
    expect(planAdmission([], { key: "huge", bytes: 101 }, limits({ maxBytes: 100 }))).toMatchObject({
      kind: "reject",
      cause: "size",
    });
    expect(planAdmission([entry("pinned", { pinned: true })], incoming, limits({ maxModels: 1 })).kind).toBe(
      "reject",
    );
    expect(isEvictable(entry("pinned", { pinned: true }))).toBe(false);
    expect(expiredEntries([entry("pinned", { pinned: true })], 1e9, 1)).toEqual([]);
  });

  test("rejects a model bigger than the whole budget, saying both sizes", () => {
    const plan = planAdmission([], { key: "huge", bytes: 101 }, limits({ maxBytes: 100 }));
    expect(plan.kind).toBe("reject");
    expect(plan.kind === "reject" && plan.reason).toMatch(/"huge".*101 bytes.*100 bytes/);
    // A model exactly the budget's size fits.
    expect(planAdmission([entry("a")], { key: "exact", bytes: 100 }, limits({ maxBytes: 100 }))).toEqual({
      kind: "admit",
      evict: ["a"],
    });
  });

  test("rejects everything when the cache may hold no models", () => {
    expect(planAdmission([], incoming, limits({ maxModels: 0 })).kind).toBe("reject");
  });

  test("rejects a size that is not a number of bytes instead of waiting forever", () => {
    expect(planAdmission([], { key: "x", bytes: Number.NaN }, limits({ maxBytes: 100 })).kind).toBe("reject");
  });

  test("victimOrder replaces LRU as the policy", () => {
    const demand: Record<string, number> = { a: 5, b: 1, c: 3 };
    const leastDemandedFirst: VictimOrder = (x, y) => (demand[x.key] ?? 0) - (demand[y.key] ?? 0);
    const entries = [
      entry("a", { lastUsedAt: 1 }),
      entry("b", { lastUsedAt: 2 }),
      entry("c", { lastUsedAt: 3 }),
    ];
    expect(planAdmission(entries, incoming, limits({ maxModels: 2 }), leastDemandedFirst)).toEqual({
      kind: "admit",
      evict: ["b", "c"],
    });
  });
});

describe("overflowVictims", () => {
  test("evicts idle entries oldest first to get back under the byte budget", () => {
    const entries = [
      entry("a", { lastUsedAt: 1, bytes: 20 }),
      entry("b", { lastUsedAt: 2, bytes: 20 }),
      entry("grown", { lastUsedAt: 3, bytes: 30, inFlight: 1 }),
    ];
    expect(overflowVictims(entries, limits({ maxBytes: 50 }))).toEqual(["a"]);
    expect(overflowVictims(entries, limits({ maxBytes: 70 }))).toEqual([]);
  });

  test("evicts every idle entry when pinned ones alone overflow", () => {
    const entries = [entry("a", { lastUsedAt: 1 }), entry("pinned", { bytes: 90, inFlight: 1 })];
    expect(overflowVictims(entries, limits({ maxBytes: 50 }))).toEqual(["a"]);
  });
});

describe("expiredEntries", () => {
  const entries = [
    entry("stale", { lastUsedAt: 0 }),
    entry("edge", { lastUsedAt: 400 }),
    entry("fresh", { lastUsedAt: 900 }),
    entry("busy", { lastUsedAt: 0, inFlight: 1 }),
    entry("loading", { lastUsedAt: 0, state: "loading" }),
  ];

  test("lists idle loaded entries unused for keepAliveMs, oldest first", () => {
    expect(expiredEntries(entries, 1000, 600)).toEqual(["stale", "edge"]);
    expect(expiredEntries(entries, 1000, 601)).toEqual(["stale"]);
  });

  test("keepAliveMs 0 never expires anything", () => {
    expect(expiredEntries(entries, 1e12, 0)).toEqual([]);
  });
});

describe("planAdmission properties", () => {
  const entriesArb = fc
    .uniqueArray(
      fc.record({
        key: fc.string({ minLength: 1, maxLength: 4 }),
        bytes: fc.nat({ max: 100 }),
        lastUsedAt: fc.nat({ max: 50 }),
        inFlight: fc.oneof(fc.constant(0), fc.nat({ max: 3 })),
        state: fc.constantFrom("loaded" as const, "loading" as const),
      }),
      { selector: (view) => view.key, maxLength: 12 },
    )
    // The incoming key is never one the cache already has.
    .map((views) => views.filter((view) => view.key !== "incoming"));
  const limitsArb = fc.record({
    maxModels: fc.oneof(fc.nat({ max: 14 }), fc.constant(Number.POSITIVE_INFINITY)),
    maxBytes: fc.oneof(fc.nat({ max: 1000 }), fc.constant(Number.POSITIVE_INFINITY)),
  });
  const orderArb = fc.constantFrom<[string, VictimOrder]>(
    ["lru", leastRecentlyUsedFirst],
    ["biggest first", (a, b) => b.bytes - a.bytes],
    ["by key", (a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)],
  );

  test("an admit plan fits the limits, spares pinned and loading entries, and follows the victim order", () => {
    fc.assert(
      fc.property(
        entriesArb,
        fc.nat({ max: 300 }),
        limitsArb,
        orderArb,
        (entries, bytes, lims, [, order]) => {
          const plan = planAdmission(entries, { key: "incoming", bytes }, lims, order);
          const evictables = entries.filter(isEvictable).sort(order);
          if (plan.kind === "reject") {
            expect(lims.maxModels < 1 || bytes > lims.maxBytes).toBe(true);
            return;
          }
          expect(lims.maxModels >= 1 && bytes <= lims.maxBytes).toBe(true);
          if (plan.kind === "wait") {
            // Waiting is right only if evicting every evictable entry would still not make room.
            const kept = entries.filter((view) => !isEvictable(view));
            const keptBytes = kept.reduce((sum, view) => sum + view.bytes, 0);
            expect(kept.length + 1 > lims.maxModels || keptBytes + bytes > lims.maxBytes).toBe(true);
            return;
          }
          expect(plan.evict).toEqual(evictables.slice(0, plan.evict.length).map((view) => view.key));
          const remaining = entries.filter((view) => !plan.evict.includes(view.key));
          const remainingBytes = remaining.reduce((sum, view) => sum + view.bytes, 0);
          expect(remaining.length + 1).toBeLessThanOrEqual(lims.maxModels);
          expect(remainingBytes + bytes).toBeLessThanOrEqual(lims.maxBytes);
          // The fewest victims: one fewer in the same order would not have made room.
          if (plan.evict.length > 0) {
            const last = evictables[plan.evict.length - 1];
            const withLast =
              remaining.length + 2 <= lims.maxModels &&
              remainingBytes + (last?.bytes ?? 0) + bytes <= lims.maxBytes;
            expect(withLast).toBe(false);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
