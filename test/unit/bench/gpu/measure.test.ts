import { describe, expect, it } from "vitest";
import { median, percentile } from "../../../../bench/gpu/measure.ts";

describe("median", () => {
  it("takes the middle value, or the mean of the two middle ones", () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 3, 2])).toBe(2.5);
    expect(median([])).toBeNaN();
  });

  it("differs from percentile's p50 only for an even count, which takes the upper middle value", () => {
    expect(median([5, 1, 9])).toBe(percentile([5, 1, 9], 50));
    expect(percentile([4, 1, 3, 2], 50)).toBe(3);
  });
});
