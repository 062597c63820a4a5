import { describe, expect, test } from "vitest";
import {
  countRequest,
  emptyCounters,
  mergeCounters,
  SLOT_MS,
} from "../../../../gateway/metrics/pool-counters.ts";

describe("mergeCounters: a sharded pool's counters from its shards'", () => {
  test("counts add up, histograms merge, the window's slots add up by start, counting starts at the earliest", () => {
    const now = 100 * SLOT_MS;
    const one = emptyCounters(now - 5_000);
    const two = emptyCounters(now - 9_000);
    countRequest(one, { model: "m", status: 200, totalMs: 10, cache: "hit" }, now - SLOT_MS);
    countRequest(one, { model: "m", status: 200, totalMs: 20, cache: "miss" }, now);
    countRequest(two, { model: "m", status: 200, totalMs: 30, cache: "hit" }, now);
    countRequest(two, { model: "n", status: 503, totalMs: 40 }, now);
    one.retries = 2;
    two.passes = { cold: 3 };
    const merged = mergeCounters([one, two]);
    expect(merged.since).toBe(now - 9_000);
    expect(merged.requests).toEqual({ "m 200": 3, "n 503": 1 });
    expect(merged.cacheHits).toEqual({ m: 2 });
    expect(merged.retries).toBe(2);
    expect(merged.passes).toEqual({ cold: 3 });
    expect(merged.requestSeconds.count).toBe(4);
    expect(merged.requestSeconds.sum).toBeCloseTo(0.1);
    expect(merged.window.map((slot) => [slot.start, slot.requests, slot.errors, slot.hits])).toEqual([
      [now - SLOT_MS, 1, 0, 1],
      [now, 3, 1, 1],
    ]);
    // The shards' own counters are left as they were.
    expect(one.requests).toEqual({ "m 200": 2 });
  });

  test("one shard's counters come back as they are", () => {
    const only = emptyCounters(1);
    expect(mergeCounters([only])).toBe(only);
  });
});
