import fc from "fast-check";
import { DATATYPES, type Datatype, type TensorData } from "../../shared/oip/datatypes.ts";
import { elementCount, type Tensor } from "../../shared/oip/tensor.ts";

/**
 * Valid tensors of every datatype, with values from each type's whole range (64-bit integers beyond 2^53,
 * every FP16 pattern JSON can carry, non-finite floats, UTF-8 strings or arbitrary bytes for BYTES): what
 * the codec's round-trip properties and the gRPC conversion's draw.
 */

const utf8 = new TextEncoder();

const INTEGER_RANGES: Partial<Record<Datatype, [number, number]>> = {
  UINT8: [0, 255],
  UINT16: [0, 65535],
  UINT32: [0, 4294967295],
  INT8: [-128, 127],
  INT16: [-32768, 32767],
  INT32: [-2147483648, 2147483647],
};

/** Half patterns other than NaNs with payloads, which JSON cannot keep apart (they come back as 0x7e00). */
const halfBits = fc
  .integer({ min: 0, max: 0xffff })
  .map((bits) => ((bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0 ? 0x7e00 : bits));

function dataOf(datatype: Datatype, count: number, arbitraryBytes: boolean): fc.Arbitrary<TensorData> {
  const list = <T>(element: fc.Arbitrary<T>) => fc.array(element, { minLength: count, maxLength: count });
  const range = INTEGER_RANGES[datatype];
  switch (datatype) {
    case "BOOL":
      return list(fc.constantFrom(0, 1)).map((values) => Uint8Array.from(values));
    case "UINT64":
      return list(fc.bigInt({ min: 0n, max: 2n ** 64n - 1n })).map((values) => BigUint64Array.from(values));
    case "INT64":
      return list(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n })).map((values) =>
        BigInt64Array.from(values),
      );
    case "FP16":
      return list(halfBits).map((values) => Uint16Array.from(values));
    case "FP32":
      return list(fc.float()).map((values) => Float32Array.from(values));
    case "FP64":
      return list(fc.double()).map((values) => Float64Array.from(values));
    case "BYTES":
      return arbitraryBytes
        ? list(fc.uint8Array({ maxLength: 8 }))
        : list(fc.string({ unit: "grapheme", maxLength: 6 })).map((values) =>
            values.map((value) => utf8.encode(value)),
          );
    default: {
      const [min, max] = range ?? [0, 0];
      const ArrayClass = {
        UINT8: Uint8Array,
        UINT16: Uint16Array,
        UINT32: Uint32Array,
        INT8: Int8Array,
        INT16: Int16Array,
        INT32: Int32Array,
      }[datatype];
      return list(fc.integer({ min, max })).map((values) => ArrayClass.from(values));
    }
  }
}

/** Up to four tensors named t0, t1, …; `binary` says whether each travels as binary data. */
export const tensorsArbitrary = (arbitraryBytes: boolean) =>
  fc
    .array(
      fc.record({
        datatype: fc.constantFrom(...DATATYPES),
        shape: fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 3 }),
        binary: fc.boolean(),
      }),
      { maxLength: 4 },
    )
    .chain((specs) =>
      fc.tuple(
        ...specs.map(({ datatype, shape, binary }, index) =>
          dataOf(datatype, elementCount(shape), arbitraryBytes && binary).map((data) => ({
            tensor: { name: `t${index}`, datatype, shape, data } satisfies Tensor,
            binary,
          })),
        ),
      ),
    );
