import { expect } from "vitest";

/** Asserts two numeric arrays have the same length and agree element-wise within `tolerance`. */
export function expectAllClose(
  actual: ArrayLike<number> | undefined,
  expected: ArrayLike<number>,
  tolerance = 1e-4,
) {
  expect(actual?.length).toBe(expected.length);
  let worst = 0;
  for (let index = 0; index < expected.length; index += 1) {
    worst = Math.max(worst, Math.abs((actual?.[index] ?? Number.NaN) - (expected[index] ?? 0)));
  }
  expect(worst).toBeLessThanOrEqual(tolerance);
}
