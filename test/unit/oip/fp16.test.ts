import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { FP16_MAX, floatToHalfBits, halfBitsToFloat } from "../../../shared/oip/fp16.ts";

const isNanBits = (bits: number) => (bits & 0x7c00) === 0x7c00 && (bits & 0x03ff) !== 0;

describe("floatToHalfBits", () => {
  test.each([
    [1, 0x3c00],
    [-2, 0xc000],
    [0.5, 0x3800],
    [FP16_MAX, 0x7bff],
    [0, 0x0000],
    [-0, 0x8000],
    [1 / 3, 0x3555],
    [0.1, 0x2e66],
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -24, 0x0001], // smallest subnormal
    [1023 * 2 ** -24, 0x03ff], // largest subnormal
    [-(2 ** -24), 0x8001],
    [Number.POSITIVE_INFINITY, 0x7c00],
    [Number.NEGATIVE_INFINITY, 0xfc00],
    [1e300, 0x7c00],
    [5e-324, 0x0000],
  ])("%d -> %s", (value, bits) => {
    expect(floatToHalfBits(value)).toBe(bits);
  });

  test("NaN becomes the canonical quiet NaN", () => {
    expect(floatToHalfBits(Number.NaN)).toBe(0x7e00);
  });

  test("ties round to the even mantissa", () => {
    expect(floatToHalfBits(1 + 2 ** -11)).toBe(0x3c00); // between 0x3c00 and 0x3c01
    expect(floatToHalfBits(1 + 3 * 2 ** -11)).toBe(0x3c02); // between 0x3c01 and 0x3c02
    expect(floatToHalfBits(2049)).toBe(0x6800); // between 2048 and 2050
    expect(floatToHalfBits(2 ** -25)).toBe(0x0000); // between 0 and the smallest subnormal
    expect(floatToHalfBits(3 * 2 ** -25)).toBe(0x0002); // between subnormals 1 and 2
    expect(floatToHalfBits(1 + 2 ** -11 + 2 ** -30)).toBe(0x3c01); // just above the tie
  });

  test("values between 65504 and 65520 round down, 65520 and above overflow to infinity", () => {
    expect(floatToHalfBits(65519.99)).toBe(0x7bff);
    expect(floatToHalfBits(65520)).toBe(0x7c00);
    expect(floatToHalfBits(-65520)).toBe(0xfc00);
  });

  test("rounding carries from the largest subnormal into the smallest normal", () => {
    expect(floatToHalfBits(1023.5 * 2 ** -24)).toBe(0x0400);
  });
});

describe("halfBitsToFloat", () => {
  test.each([
    [0x3c00, 1],
    [0x7bff, 65504],
    [0x0001, 2 ** -24],
    [0x03ff, 1023 * 2 ** -24],
    [0x0400, 2 ** -14],
    [0x7c00, Number.POSITIVE_INFINITY],
    [0xfc00, Number.NEGATIVE_INFINITY],
    [0xc000, -2],
  ])("%s -> %d", (bits, value) => {
    expect(halfBitsToFloat(bits)).toBe(value);
  });

  test("keeps the sign of zero and reads every NaN pattern as NaN", () => {
    expect(Object.is(halfBitsToFloat(0x8000), -0)).toBe(true);
    expect(halfBitsToFloat(0x7e00)).toBeNaN();
    expect(halfBitsToFloat(0x7c01)).toBeNaN();
    expect(halfBitsToFloat(0xffff)).toBeNaN();
  });
});

test("every half survives a trip through a number (NaNs come back canonical)", () => {
  const mismatches: number[] = [];
  for (let bits = 0; bits <= 0xffff; bits++) {
    if (floatToHalfBits(halfBitsToFloat(bits)) !== (isNanBits(bits) ? 0x7e00 : bits)) mismatches.push(bits);
  }
  expect(mismatches).toEqual([]);
});

const { f16round } = Math as unknown as { f16round?: (value: number) => number };

test.skipIf(f16round === undefined)("rounds every double exactly like Math.f16round", () => {
  const reference = f16round ?? ((value: number) => value);
  fc.assert(
    fc.property(
      fc.oneof(fc.double(), fc.double({ min: -70000, max: 70000 }), fc.double({ min: -1e-4, max: 1e-4 })),
      (value) => {
        expect(Object.is(halfBitsToFloat(floatToHalfBits(value)), reference(value))).toBe(true);
      },
    ),
    { numRuns: 2000 },
  );
});
