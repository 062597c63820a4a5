import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { SwitchyardError } from "../../../shared/errors.ts";
import {
  answeredOutputs,
  asksClasses,
  classify,
  formatFloat,
  unlabelled,
} from "../../../shared/oip/classification.ts";
import { floatToHalfBits } from "../../../shared/oip/fp16.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";

const strings = (tensor: Tensor) =>
  (tensor.data as Uint8Array[]).map((bytes) => new TextDecoder().decode(bytes));

const fp32 = (shape: number[], values: number[]): Tensor => ({
  name: "probs",
  datatype: "FP32",
  shape,
  data: new Float32Array(values),
});

describe("Triton's classification extension", () => {
  test("Triton's own example: the top two of [1.1, 3.3, 0.5, 2.4] are '3.300000:1' and '2.400000:3'", () => {
    const classes = classify(fp32([4], [1.1, 3.3, 0.5, 2.4]), 2, false);
    expect(classes).toMatchObject({ name: "probs", datatype: "BYTES", shape: [2] });
    expect(strings(classes)).toEqual(["3.300000:1", "2.400000:3"]);
  });

  test("a batching model's output is classified row by row; another's as one row, indices over all of it", () => {
    const output = fp32([2, 3], [0.1, 0.7, 0.2, 0.9, 0.05, 0.05]);
    const request = { outputs: [{ name: "probs", classification: 2 }] };
    const [perRow] = answeredOutputs(
      { outputs: [output], classes: { batched: true, labels: new Map() } },
      request,
    );
    expect(perRow?.shape).toEqual([2, 2]);
    expect(strings(perRow as Tensor)).toEqual(["0.700000:1", "0.200000:2", "0.900000:0", "0.050000:1"]);
    const [whole] = answeredOutputs(
      { outputs: [output], classes: { batched: false, labels: new Map() } },
      request,
    );
    expect(whole?.shape).toEqual([2]);
    expect(strings(whole as Tensor)).toEqual(["0.900000:3", "0.700000:1"]);
  });

  test("an output with labels carries the label of each class that has one", () => {
    const [labelled] = answeredOutputs(
      {
        outputs: [fp32([1, 4], [0.2, 0.5, 0.3, 0.9])],
        classes: { batched: true, labels: new Map([["probs", ["cat", "", "dog"]]]) },
      },
      { outputs: [{ name: "probs", classification: 4 }] },
    );
    // Class 1's line is empty and class 3 has none: as in Triton, neither has a label.
    expect(strings(labelled as Tensor)).toEqual([
      "0.900000:3",
      "0.500000:1",
      "0.300000:2:dog",
      "0.200000:0:cat",
    ]);
  });

  test("a request's outcome needs the labels only when it asks classes; without, whether the model batches stays", () => {
    expect(asksClasses({ outputs: [{ name: "a" }, { name: "b", classification: 1 }] })).toBe(true);
    expect(asksClasses({ outputs: [{ name: "a" }] })).toBe(false);
    expect(asksClasses({})).toBe(false);
    const classes = { batched: true, labels: new Map([["probs", ["cat"]]]) };
    expect(unlabelled(classes)).toEqual({ batched: true, labels: new Map() });
    const none = { batched: false, labels: new Map() };
    expect(unlabelled(none)).toBe(none);
  });

  test("only the outputs asked for are classified; the others come back as they ran", () => {
    const other: Tensor = { name: "boxes", datatype: "FP32", shape: [1, 2], data: new Float32Array([1, 2]) };
    const probs = fp32([1, 3], [0.2, 0.5, 0.3]);
    const served = { outputs: [other, probs], classes: { batched: true, labels: new Map() } };
    const answered = answeredOutputs(served, {
      outputs: [{ name: "boxes" }, { name: "probs", classification: 1 }],
    });
    expect(answered[0]).toBe(other);
    expect(strings(answered[1] as Tensor)).toEqual(["0.500000:1"]);
    expect(answeredOutputs(served, {})).toBe(served.outputs);
  });

  test("more classes than a row holds gives the row's; ties go to the lower index; NaN counts lowest", () => {
    const classes = classify(fp32([1, 4], [Number.NaN, 2, 5, 2]), 10, true);
    expect(classes.shape).toEqual([1, 4]);
    expect(strings(classes)).toEqual(["5.000000:2", "2.000000:1", "2.000000:3", "nan:0"]);
    // A batching model's scalar output has no rows: one row of one.
    const [scalar] = answeredOutputs(
      { outputs: [fp32([], [7])], classes: { batched: true, labels: new Map() } },
      { outputs: [{ name: "probs", classification: 3 }] },
    );
    expect(scalar?.shape).toEqual([1]);
    expect(strings(scalar as Tensor)).toEqual(["7.000000:0"]);
    // Nor has an empty batch: Triton answers it as one empty row.
    const [empty] = answeredOutputs(
      { outputs: [fp32([0, 4], [])], classes: { batched: true, labels: new Map() } },
      { outputs: [{ name: "probs", classification: 3 }] },
    );
    expect(empty).toMatchObject({ shape: [0], data: [] });
  });

  test("integers print in full (INT64 beyond 2^53 too), FP16 as its float, and compare by their type", () => {
    const int64: Tensor = {
      name: "ids",
      datatype: "INT64",
      shape: [3],
      data: new BigInt64Array([-5n, 9007199254740993n, 9007199254740992n]),
    };
    expect(strings(classify(int64, 3, false))).toEqual(["9007199254740993:1", "9007199254740992:2", "-5:0"]);
    const uint8: Tensor = { name: "u", datatype: "UINT8", shape: [3], data: new Uint8Array([3, 255, 0]) };
    expect(strings(classify(uint8, 2, false))).toEqual(["255:1", "3:0"]);
    const half: Tensor = {
      name: "h",
      datatype: "FP16",
      shape: [2],
      data: new Uint16Array([floatToHalfBits(0.25), floatToHalfBits(-1)]),
    };
    expect(strings(classify(half, 2, false))).toEqual(["0.250000:0", "-1.000000:1"]);
  });

  test("a NaN with its sign bit set is '-nan', as glibc writes x86's own NaNs", () => {
    const values = new Float32Array([Number.NaN, Number.NaN, 1]);
    new Uint32Array(values.buffer)[0] = 0xffc00000;
    new Uint32Array(values.buffer)[1] = 0x7fc00000;
    expect(strings(classify(fp32([3], []), 0, false))).toEqual([]);
    expect(strings(classify({ ...fp32([3], []), data: values }, 3, false))).toEqual([
      "1.000000:2",
      "-nan:0",
      "nan:1",
    ]);
    const doubles = new Float64Array([Number.NaN]);
    const bytes = new Uint8Array(doubles.buffer);
    bytes[7] = (bytes[7] ?? 0) | 0x80;
    const fp64: Tensor = { name: "d", datatype: "FP64", shape: [1], data: doubles };
    expect(strings(classify(fp64, 1, false))).toEqual(["-nan:0"]);
    const half: Tensor = { name: "h", datatype: "FP16", shape: [2], data: new Uint16Array([0xfe00, 0x7e00]) };
    expect(strings(classify(half, 2, false))).toEqual(["-nan:0", "nan:1"]);
  });

  test("BOOL and BYTES outputs have no classes: 400 in Triton's words", () => {
    for (const tensor of [
      { name: "mask", datatype: "BOOL", shape: [2], data: new Uint8Array([1, 0]) },
      { name: "text", datatype: "BYTES", shape: [1], data: [new Uint8Array([104])] },
    ] as Tensor[]) {
      let error: unknown;
      try {
        classify(tensor, 1, false);
      } catch (caught) {
        error = caught;
      }
      expect(error).toBeInstanceOf(SwitchyardError);
      expect((error as SwitchyardError).status).toBe(400);
      expect((error as SwitchyardError).message).toBe(
        `class result not available for output '${tensor.name}' due to unsupported type '${tensor.datatype}'`,
      );
    }
  });

  test("the top k of any row are the first k of the row sorted by value, then index", () => {
    fc.assert(
      fc.property(
        fc.array(fc.float({ noDefaultInfinity: false }), { minLength: 1, maxLength: 200 }),
        fc.integer({ min: 1, max: 220 }),
        (values, count) => {
          const tensor = fp32([values.length], values);
          const stored = tensor.data as Float32Array;
          const expected = [...stored.keys()]
            .sort((a, b) => {
              const x = stored[a] as number;
              const y = stored[b] as number;
              if (Number.isNaN(x) !== Number.isNaN(y)) return Number.isNaN(x) ? 1 : -1;
              return x === y || (Number.isNaN(x) && Number.isNaN(y)) ? a - b : y - x;
            })
            .slice(0, count)
            .map((index) => `${formatFloat(stored[index] as number)}:${index}`);
          expect(strings(classify(tensor, count, false))).toEqual(expected);
        },
      ),
    );
  });
});

describe("values as C's %f writes them (std::to_string)", () => {
  test.each([
    [Math.fround(3.3), "3.300000"],
    [0.0078125, "0.007812"], // a tie, to even
    [0.0234375, "0.023438"], // a tie, to even
    [-0, "-0.000000"],
    [-1e-9, "-0.000000"],
    [1e21, "1000000000000000000000.000000"],
    [3.4028234663852886e38, "340282346638528859811704183484516925440.000000"],
    [5e-324, "0.000000"],
    [Number.NaN, "nan"],
    [Number.POSITIVE_INFINITY, "inf"],
    [Number.NEGATIVE_INFINITY, "-inf"],
  ])("%s is %s", (value, written) => {
    expect(formatFloat(value)).toBe(written);
  });
});
