import { describe, expect, test } from "vitest";
import { DEMAND_TIME_CONSTANT_MS, DemandTracker } from "../../../shared/routing/demand.ts";

describe("DemandTracker", () => {
  test("a steady stream reads as its rate once it has run for several time constants", () => {
    const tracker = new DemandTracker();
    for (let at = 0; at <= 10 * DEMAND_TIME_CONSTANT_MS; at += 100) tracker.record("m", at); // 10 a second
    expect(tracker.ratePerSecond("m", 10 * DEMAND_TIME_CONSTANT_MS)).toBeCloseTo(10, 0);
    expect(tracker.ratePerSecond("never", 0)).toBe(0);
  });

  test("an idle model's rate decays: e^-1 per time constant", () => {
    const tracker = new DemandTracker();
    for (let at = 0; at <= 60_000; at += 100) tracker.record("m", at);
    const before = tracker.ratePerSecond("m", 60_000);
    expect(tracker.ratePerSecond("m", 60_000 + DEMAND_TIME_CONSTANT_MS)).toBeCloseTo(before / Math.E, 5);
    expect(tracker.rates(60_000).get("m")).toBeCloseTo(before, 10);
  });

  test("models are counted apart", () => {
    const tracker = new DemandTracker();
    for (let at = 0; at <= 100_000; at += 50) tracker.record("hot", at);
    for (let at = 0; at <= 100_000; at += 1000) tracker.record("cold", at);
    const ratio = tracker.ratePerSecond("hot", 100_000) / tracker.ratePerSecond("cold", 100_000);
    expect(ratio).toBeGreaterThan(17);
    expect(ratio).toBeLessThan(23);
  });
});
