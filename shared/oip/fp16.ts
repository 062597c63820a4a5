/**
 * IEEE 754 half precision (binary16) <-> JavaScript numbers. FP16 tensors travel and live as their raw
 * 16-bit patterns (see datatypes.ts), so these two functions are the only place where halves become
 * numbers: JSON input, JSON output and tests.
 */

/** The largest finite half, 65504. */
export const FP16_MAX = 65504;

/** Halves of this magnitude and above round to infinity (the midpoint between 65504 and 2^16). */
const OVERFLOW_THRESHOLD = 65520;
const SMALLEST_NORMAL = 2 ** -14;
const CANONICAL_NAN = 0x7e00;

/**
 * The half nearest to `value`, as its bit pattern; ties go to the even mantissa. Rounds straight from the
 * double rather than through a float32, which would round twice and occasionally land one ulp off.
 */
export function floatToHalfBits(value: number): number {
  if (Number.isNaN(value)) return CANONICAL_NAN;
  const sign = value < 0 || Object.is(value, -0) ? 0x8000 : 0;
  const magnitude = Math.abs(value);
  if (magnitude >= OVERFLOW_THRESHOLD) return sign | 0x7c00;
  if (magnitude < SMALLEST_NORMAL) {
    // Subnormals are multiples of 2^-24; a mantissa that rounds up to 1024 is exactly the smallest normal,
    // whose bit pattern is 0x0400, so no special case is needed.
    return sign | roundHalfToEven(magnitude * 2 ** 24);
  }
  let exponent = Math.floor(Math.log2(magnitude));
  // log2 can be off by one right next to a power of two; settle it exactly.
  if (2 ** exponent > magnitude) exponent -= 1;
  else if (2 ** (exponent + 1) <= magnitude) exponent += 1;
  // Scaling by a power of two is exact, so the only rounding is the one we do.
  let mantissa = roundHalfToEven(magnitude * 2 ** (10 - exponent));
  if (mantissa === 2048) {
    mantissa = 1024;
    exponent += 1;
  }
  if (exponent > 15) return sign | 0x7c00;
  return sign | ((exponent + 15) << 10) | (mantissa - 1024);
}

/** The number a half bit pattern stands for (exact: every half is a double). */
export function halfBitsToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1;
  const exponent = (bits >> 10) & 0x1f;
  const mantissa = bits & 0x3ff;
  if (exponent === 0) return sign * mantissa * 2 ** -24;
  if (exponent === 0x1f) return mantissa === 0 ? sign * Number.POSITIVE_INFINITY : Number.NaN;
  return sign * (1024 + mantissa) * 2 ** (exponent - 25);
}

function roundHalfToEven(value: number): number {
  const floor = Math.floor(value);
  const fraction = value - floor;
  if (fraction > 0.5) return floor + 1;
  if (fraction < 0.5) return floor;
  return floor % 2 === 0 ? floor : floor + 1;
}
