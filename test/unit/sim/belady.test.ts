import { describe, expect, test } from "vitest";
import { beladyHits } from "../../../bench/sim/belady.ts";

describe("beladyHits", () => {
  test("a count-bounded cache of 2 on a hand-computed trace: 3 hits", () => {
    // 0 1 2 0 1 3 0 1 2 3 — misses evict the item used furthest ahead:
    // 2 evicts 1 (0 comes back sooner); 0 hits; 1 evicts 2; 3 evicts 1; 0 hits; 1 evicts 0 (never again);
    // 2 evicts 1; 3 hits.
    const trace = Int32Array.from([0, 1, 2, 0, 1, 3, 0, 1, 2, 3]);
    expect(beladyHits(trace, [1, 1, 1, 1], { items: 2, bytes: Infinity })).toBe(3);
  });

  test("a byte-bounded cache evicts by furthest next use until the newcomer fits", () => {
    // Sizes 1, 1, 2 in 3 bytes: 2 arrives and evicts 1 (used after 0); 0 hits; 1 misses.
    const trace = Int32Array.from([0, 1, 2, 0, 1]);
    expect(beladyHits(trace, [1, 1, 2], { items: Infinity, bytes: 3 })).toBe(1);
  });

  test("everything fits: every repeat is a hit; an item bigger than the cache never is", () => {
    const trace = Int32Array.from([0, 1, 0, 1, 2, 2]);
    expect(beladyHits(trace, [1, 1, 9], { items: 10, bytes: 5 })).toBe(2);
  });
});
