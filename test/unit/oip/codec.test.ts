import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { SwitchyardError } from "../../../shared/errors.ts";
import {
  binaryOutputSelector,
  dataFromBinary,
  decodeInferRequest,
  decodeInferResponse,
  type EncodedBody,
  encodeInferRequest,
  encodeInferResponse,
  tensorByteLength,
} from "../../../shared/oip/codec.ts";
import { DATATYPES, type Datatype } from "../../../shared/oip/datatypes.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";
import { tensorsArbitrary } from "../../support/tensor-arbitraries.ts";

const utf8 = new TextEncoder();
const text = new TextDecoder();

const jsonBody = (value: unknown) => utf8.encode(JSON.stringify(value));

/** A binary body: the JSON header followed by the given byte chunks. */
function binaryBody(header: unknown, ...chunks: Uint8Array[]): { body: Uint8Array; headerLength: number } {
  const headerBytes = jsonBody(header);
  const body = new Uint8Array(headerBytes.length + chunks.reduce((total, chunk) => total + chunk.length, 0));
  body.set(headerBytes);
  let offset = headerBytes.length;
  for (const chunk of chunks) {
    body.set(chunk, offset);
    offset += chunk.length;
  }
  return { body, headerLength: headerBytes.length };
}

const bytesOf = (data: ArrayBufferView) => new Uint8Array(data.buffer, data.byteOffset, data.byteLength);

/** BYTES elements on the wire: a 4-byte little-endian length before each. */
function lengthPrefixed(...elements: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(elements.reduce((total, element) => total + 4 + element.length, 0));
  const view = new DataView(out.buffer);
  let offset = 0;
  for (const element of elements) {
    view.setUint32(offset, element.length, true);
    out.set(element, offset + 4);
    offset += 4 + element.length;
  }
  return out;
}

function headerJson(encoded: EncodedBody): Record<string, unknown> {
  return JSON.parse(text.decode(encoded.body.subarray(0, encoded.headerLength ?? encoded.body.length)));
}

/** Runs `action`, expecting a 400 bad_input SwitchyardError whose message matches `message`. */
function expectBadInput(action: () => unknown, message: RegExp | string): void {
  let thrown: unknown;
  try {
    action();
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(SwitchyardError);
  const error = thrown as SwitchyardError;
  expect(error.code).toBe("bad_input");
  expect(error.status).toBe(400);
  expect(error.message).toMatch(message);
}

const request = (...inputs: unknown[]) => jsonBody({ inputs });

/** One tensor per datatype, each with the values most likely to go wrong. */
const SAMPLES: Tensor[] = [
  { name: "bool", datatype: "BOOL", shape: [3], data: Uint8Array.of(1, 0, 1) },
  { name: "uint8", datatype: "UINT8", shape: [2], data: Uint8Array.of(0, 255) },
  { name: "uint16", datatype: "UINT16", shape: [2], data: Uint16Array.of(0, 65535) },
  { name: "uint32", datatype: "UINT32", shape: [2], data: Uint32Array.of(0, 4294967295) },
  {
    name: "uint64",
    datatype: "UINT64",
    shape: [3],
    data: BigUint64Array.of(0n, 2n ** 53n + 1n, 2n ** 64n - 1n),
  },
  { name: "int8", datatype: "INT8", shape: [2], data: Int8Array.of(-128, 127) },
  { name: "int16", datatype: "INT16", shape: [2], data: Int16Array.of(-32768, 32767) },
  { name: "int32", datatype: "INT32", shape: [2], data: Int32Array.of(-2147483648, 2147483647) },
  {
    name: "int64",
    datatype: "INT64",
    shape: [2, 2],
    data: BigInt64Array.of(-(2n ** 63n), 2n ** 63n - 1n, -(2n ** 53n) - 3n, 42n),
  },
  // 1.0, 65504, smallest subnormal, -inf, -0
  {
    name: "fp16",
    datatype: "FP16",
    shape: [5],
    data: Uint16Array.of(0x3c00, 0x7bff, 0x0001, 0xfc00, 0x8000),
  },
  {
    name: "fp32",
    datatype: "FP32",
    shape: [2, 3],
    data: Float32Array.of(1.5, -0, Number.POSITIVE_INFINITY, Number.NaN, 3.4028234663852886e38, 1e-45),
  },
  {
    name: "fp64",
    datatype: "FP64",
    shape: [1, 5],
    data: Float64Array.of(Math.PI, Number.MAX_VALUE, 5e-324, Number.NEGATIVE_INFINITY, Number.NaN),
  },
  {
    name: "bytes",
    datatype: "BYTES",
    shape: [4],
    data: ["héllo", "", "日本語 🎉", "plain"].map((value) => utf8.encode(value)),
  },
  { name: "scalar", datatype: "FP32", shape: [], data: Float32Array.of(7) },
  { name: "empty", datatype: "INT32", shape: [0, 4], data: new Int32Array(0) },
];

describe("round trips for every datatype", () => {
  test.each([false, true])("request, binary inputs: %s", (binaryInputs) => {
    const encoded = encodeInferRequest({ id: "r1", inputs: SAMPLES }, { binaryInputs });
    expect(encoded.contentType).toBe(binaryInputs ? "application/octet-stream" : "application/json");
    expect(encoded.headerLength === undefined).toBe(!binaryInputs);
    const decoded = decodeInferRequest(encoded.body, encoded.headerLength);
    expect(decoded.id).toBe("r1");
    expect(decoded.inputs).toEqual(SAMPLES);
  });

  test.each([false, true])("response, binary outputs: %s", (binary) => {
    const response = {
      model_name: "m",
      model_version: "3",
      id: "r1",
      parameters: { a: 1 },
      outputs: SAMPLES,
    };
    const encoded = encodeInferResponse(response, () => binary);
    expect(encoded.contentType).toBe(binary ? "application/octet-stream" : "application/json");
    expect(decodeInferResponse(encoded.body, encoded.headerLength)).toEqual(response);
  });

  test("a response mixing JSON and binary outputs keeps each where it was asked for", () => {
    const encoded = encodeInferResponse({ model_name: "m", outputs: SAMPLES }, (name) =>
      name.startsWith("int"),
    );
    const outputs = headerJson(encoded).outputs as { name: string; data?: unknown; parameters?: unknown }[];
    for (const output of outputs) {
      if (output.name.startsWith("int")) {
        expect(output.data).toBeUndefined();
        expect(output.parameters).toEqual({ binary_data_size: expect.any(Number) });
      } else {
        expect(output.data).toBeInstanceOf(Array);
      }
    }
    expect(decodeInferResponse(encoded.body, encoded.headerLength).outputs).toEqual(SAMPLES);
  });
});

describe("JSON wire form", () => {
  test("writes flat data: exact 64-bit integers, halves as numbers, strings, booleans and named non-finite floats", () => {
    const encoded = encodeInferResponse({ model_name: "m", outputs: SAMPLES }, () => false);
    const raw = text.decode(encoded.body);
    expect(raw).toContain('"data":[-9223372036854775808,9223372036854775807,-9007199254740995,42]');
    expect(raw).toContain('"data":[0,9007199254740993,18446744073709551615]');
    expect(raw).toContain('"data":[1,65504,5.960464477539063e-8,"-Infinity",-0]');
    expect(raw).toContain('"data":[1.5,-0,"Infinity","NaN",3.4028234663852886e+38');
    expect(raw).toContain('"data":[true,false,true]');
    expect(raw).toContain('"data":["héllo","","日本語 🎉","plain"]');
    expect(encoded.headerLength).toBeUndefined();
  });

  test("accepts nested data in row-major order", () => {
    const decoded = decodeInferRequest(
      request(
        {
          name: "a",
          shape: [2, 3],
          datatype: "INT32",
          data: [
            [1, 2, 3],
            [4, 5, 6],
          ],
        },
        { name: "b", shape: [2, 1, 2], datatype: "FP32", data: [[[1, 2]], [[3, 4]]] },
        {
          name: "c",
          shape: [2, 2],
          datatype: "BYTES",
          data: [
            ["a", "b"],
            ["c", "d"],
          ],
        },
      ),
    );
    expect(decoded.inputs[0]?.data).toEqual(Int32Array.of(1, 2, 3, 4, 5, 6));
    expect(decoded.inputs[1]?.data).toEqual(Float32Array.of(1, 2, 3, 4));
    expect(decoded.inputs[2]?.data).toEqual(["a", "b", "c", "d"].map((value) => utf8.encode(value)));
  });

  test("takes INT64/UINT64 beyond 2^53 exactly, as decimal strings or as JSON numbers", () => {
    const body = utf8.encode(
      '{"inputs":[{"name":"a","shape":[3],"datatype":"INT64","data":["9007199254740993",-9223372036854775808,9007199254740995]},' +
        '{"name":"b","shape":[2],"datatype":"UINT64","data":[18446744073709551615,"18446744073709551614"]}]}',
    );
    const [a, b] = decodeInferRequest(body).inputs;
    expect(a?.data).toEqual(BigInt64Array.of(2n ** 53n + 1n, -(2n ** 63n), 2n ** 53n + 3n));
    expect(b?.data).toEqual(BigUint64Array.of(2n ** 64n - 1n, 2n ** 64n - 2n));
  });

  test("BOOL takes 0 and 1 as well as booleans; FP16 numbers become half bits", () => {
    const [flags, halves] = decodeInferRequest(
      request(
        { name: "flags", shape: [4], datatype: "BOOL", data: [true, 0, 1, false] },
        { name: "halves", shape: [4], datatype: "FP16", data: [1, 65504, 2 ** -24, "Infinity"] },
      ),
    ).inputs;
    expect(flags?.data).toEqual(Uint8Array.of(1, 0, 1, 0));
    expect(halves?.data).toEqual(Uint16Array.of(0x3c00, 0x7bff, 0x0001, 0x7c00));
  });

  test("passes parameters through and drops parameters that only carried binary_data_size", () => {
    const decoded = decodeInferRequest(
      jsonBody({
        parameters: { priority: 2 },
        inputs: [{ name: "a", shape: [1], datatype: "INT8", data: [1], parameters: { content_type: "x" } }],
      }),
    );
    expect(decoded.parameters).toEqual({ priority: 2 });
    expect(decoded.inputs[0]?.parameters).toEqual({ content_type: "x" });
    const { body, headerLength } = binaryBody(
      { inputs: [{ name: "a", shape: [1], datatype: "INT8", parameters: { binary_data_size: 1 } }] },
      Uint8Array.of(5),
    );
    expect(decodeInferRequest(body, headerLength).inputs[0]).toEqual({
      name: "a",
      datatype: "INT8",
      shape: [1],
      data: Int8Array.of(5),
    });
  });
});

describe("binary tensor data", () => {
  test("reads mixed JSON and binary inputs, binary ones in order after the header", () => {
    const floats = Float32Array.of(1.25, -2);
    const words = [utf8.encode("naïve"), utf8.encode("")];
    const { body, headerLength } = binaryBody(
      {
        inputs: [
          { name: "f", shape: [2], datatype: "FP32", parameters: { binary_data_size: 8 } },
          { name: "j", shape: [2], datatype: "INT16", data: [7, -7] },
          { name: "s", shape: [2], datatype: "BYTES", parameters: { binary_data_size: 4 + 6 + 4 } },
          { name: "i", shape: [1], datatype: "INT64", parameters: { binary_data_size: 8 } },
        ],
      },
      bytesOf(floats),
      lengthPrefixed(...words),
      bytesOf(BigInt64Array.of(-(2n ** 62n) - 1n)),
    );
    const inputs = decodeInferRequest(body, headerLength).inputs;
    expect(inputs.map((input) => input.data)).toEqual([
      floats,
      Int16Array.of(7, -7),
      words,
      BigInt64Array.of(-(2n ** 62n) - 1n),
    ]);
    expect(inputs.every((input) => input.parameters === undefined)).toBe(true);
  });

  test("writes fixed-size outputs as raw little-endian bytes and BYTES with length prefixes", () => {
    const encoded = encodeInferResponse(
      {
        model_name: "m",
        outputs: [
          { name: "f", datatype: "FP32", shape: [2], data: Float32Array.of(1, -0.5) },
          { name: "s", datatype: "BYTES", shape: [1], data: [utf8.encode("é")] },
        ],
      },
      () => true,
    );
    const headerLength = encoded.headerLength ?? 0;
    expect(headerJson(encoded).outputs).toEqual([
      { name: "f", datatype: "FP32", shape: [2], parameters: { binary_data_size: 8 } },
      { name: "s", datatype: "BYTES", shape: [1], parameters: { binary_data_size: 6 } },
    ]);
    expect([...encoded.body.subarray(headerLength)]).toEqual([
      ...[0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xbf],
      ...[2, 0, 0, 0, 0xc3, 0xa9],
    ]);
  });

  test("a request asks for binary outputs through binary_data_output and per-output binary_data", () => {
    const encoded = encodeInferRequest(
      {
        inputs: [SAMPLES[0] as Tensor],
        outputs: [
          { name: "x" },
          { name: "y", binary: false },
          { name: "z", binary: true, parameters: { k: 1 } },
        ],
      },
      { binaryInputs: false, binaryOutputs: true },
    );
    expect(headerJson(encoded)).toMatchObject({
      parameters: { binary_data_output: true },
      outputs: [{ name: "x" }, { name: "y", parameters: { binary_data: false } }, { name: "z" }],
    });
    const decoded = decodeInferRequest(encoded.body, encoded.headerLength);
    expect(decoded.outputs).toEqual([
      { name: "x", binary: true, parameters: {} },
      { name: "y", binary: false, parameters: {} },
      { name: "z", binary: true, parameters: { k: 1 } },
    ]);
    const wantsBinary = binaryOutputSelector(decoded);
    expect([wantsBinary("x"), wantsBinary("y"), wantsBinary("unlisted")]).toEqual([true, false, true]);
  });

  test("an output's classification count is read apart from its other parameters, and must be a positive integer", () => {
    const decoded = decodeInferRequest(
      jsonBody({ inputs: [], outputs: [{ name: "p", parameters: { classification: 3, k: "v" } }] }),
    );
    expect(decoded.outputs).toEqual([
      { name: "p", binary: false, classification: 3, parameters: { k: "v" } },
    ]);
    for (const count of [0, -1, 2.5, "3", null]) {
      expect(() =>
        decodeInferRequest(
          jsonBody({ inputs: [], outputs: [{ name: "p", parameters: { classification: count } }] }),
        ),
      ).toThrow("outputs[0].parameters.classification: must be a whole number of classes, 1 or more");
    }
  });

  test("outputs default to JSON", () => {
    const decoded = decodeInferRequest(jsonBody({ inputs: [], outputs: [{ name: "x" }] }));
    expect(decoded.outputs).toEqual([{ name: "x", binary: false, parameters: {} }]);
    expect(binaryOutputSelector(decodeInferRequest(jsonBody({ inputs: [] })))("x")).toBe(false);
  });

  test("a header length equal to the body length means no binary part", () => {
    const body = request({ name: "a", shape: [1], datatype: "INT8", data: [3] });
    expect(decodeInferRequest(body, body.length).inputs[0]?.data).toEqual(Int8Array.of(3));
  });
});

test("tensorByteLength is the size of the tensor's binary form", () => {
  expect(tensorByteLength({ name: "f", datatype: "FP32", shape: [2, 3], data: new Float32Array(6) })).toBe(
    24,
  );
  expect(tensorByteLength({ name: "h", datatype: "FP16", shape: [3], data: new Uint16Array(3) })).toBe(6);
  const words = [utf8.encode("ab"), utf8.encode("é")];
  expect(tensorByteLength({ name: "s", datatype: "BYTES", shape: [2], data: words })).toBe(4 + 2 + 4 + 2);
  for (const sample of SAMPLES) {
    const encoded = encodeInferResponse({ model_name: "m", outputs: [sample] }, () => true);
    expect(encoded.body.length - (encoded.headerLength ?? 0)).toBe(tensorByteLength(sample));
  }
});

test("encoders refuse tensors whose data disagrees with datatype or shape", () => {
  const wrongType: Tensor = { name: "x", datatype: "FP32", shape: [1], data: Float64Array.of(1) };
  const wrongCount: Tensor = { name: "x", datatype: "INT8", shape: [2, 2], data: Int8Array.of(1) };
  for (const tensor of [wrongType, wrongCount]) {
    expect(() => encodeInferResponse({ model_name: "m", outputs: [tensor] }, () => false)).toThrow(
      expect.objectContaining({ code: "internal", message: expect.stringContaining('outputs[0] ("x")') }),
    );
  }
});

describe("bad input", () => {
  test("malformed JSON and a header that is not UTF-8", () => {
    expectBadInput(() => decodeInferRequest(utf8.encode('{"inputs": [')), /malformed JSON in the request/);
    expectBadInput(() => decodeInferRequest(Uint8Array.of(0x7b, 0xff, 0x7d)), /not valid UTF-8/);
    expectBadInput(() => decodeInferResponse(utf8.encode("nope")), /malformed JSON in the response/);
  });

  test("schema violations name the field", () => {
    expectBadInput(() => decodeInferRequest(jsonBody([])), /^request body: .*expected object/);
    expectBadInput(() => decodeInferRequest(jsonBody({})), /^inputs: .*expected array/);
    expectBadInput(
      () => decodeInferRequest(request({ shape: [1], datatype: "INT8", data: [1] })),
      /^inputs\[0\]\.name:/,
    );
    expectBadInput(
      () =>
        decodeInferRequest(
          request(
            { name: "a", shape: [1], datatype: "INT8", data: [1] },
            { name: "b", shape: [2, -1], datatype: "INT8", data: [] },
          ),
        ),
      /^inputs\[1\]\.shape\[1\]: expected a non-negative integer, got -1/,
    );
    expectBadInput(
      () => decodeInferRequest(request({ name: "a", shape: [1.5], datatype: "INT8", data: [1] })),
      /^inputs\[0\]\.shape\[0\]: expected a non-negative integer, got 1.5/,
    );
    expectBadInput(
      () => decodeInferRequest(request({ name: "a", shape: "2", datatype: "INT8", data: [1] })),
      /^inputs\[0\]\.shape: expected an array of non-negative integers/,
    );
    expectBadInput(
      () =>
        decodeInferRequest(
          jsonBody({ inputs: [], outputs: [{ name: "x", parameters: { binary_data: "yes" } }] }),
        ),
      /^outputs\[0\]\.parameters\.binary_data:/,
    );
    expectBadInput(
      () =>
        decodeInferRequest(
          request({ name: "a", shape: [1], datatype: "INT8", parameters: { binary_data_size: -4 } }),
        ),
      /^inputs\[0\]\.parameters\.binary_data_size: expected a non-negative integer/,
    );
    expectBadInput(() => decodeInferResponse(jsonBody({ outputs: [] })), /^model_name:/);
  });

  test("unknown datatype", () => {
    expectBadInput(
      () => decodeInferRequest(request({ name: "a", shape: [1], datatype: "FP8", data: [1] })),
      /^inputs\[0\]\.datatype: unknown datatype "FP8"; expected one of BOOL, /,
    );
  });

  test("data length disagrees with the shape", () => {
    expectBadInput(
      () =>
        decodeInferRequest(request({ name: "a", shape: [2, 3], datatype: "FP32", data: [1, 2, 3, 4, 5] })),
      'inputs[0] ("a"): shape [2, 3] needs 6 elements but data has 5',
    );
    expectBadInput(
      () =>
        decodeInferRequest(
          request({
            name: "a",
            shape: [2, 3],
            datatype: "FP32",
            data: [
              [1, 2, 3],
              [4, 5],
            ],
          }),
        ),
      /nested data does not match shape \[2, 3\]: at depth 1 expected an array of 3, got an array of 2/,
    );
    expectBadInput(
      () =>
        decodeInferRequest(
          request({
            name: "a",
            shape: [3, 2],
            datatype: "FP32",
            data: [
              [1, 2, 3],
              [4, 5, 6],
            ],
          }),
        ),
      /at depth 0 expected an array of 3, got an array of 2/,
    );
    expectBadInput(
      () => decodeInferRequest(request({ name: "a", shape: [1], datatype: "FP32", data: 1 })),
      'inputs[0] ("a"): data must be an array, got 1',
    );
  });

  test.each<[Datatype, unknown, string]>([
    ["INT8", 300, "an integer in [-128, 127]"],
    ["UINT8", -1, "an integer in [0, 255]"],
    ["INT32", 1.5, "an integer in [-2147483648, 2147483647]"],
    ["UINT32", "7", "an integer in [0, 4294967295]"],
    ["INT64", "12a", "an integer in [-9223372036854775808, 9223372036854775807]"],
    ["INT64", "9223372036854775808", "an integer in [-9223372036854775808, 9223372036854775807]"],
    ["UINT64", -1, "an integer in [0, 18446744073709551615]"],
    ["BOOL", 2, "true, false, 0 or 1"],
    ["FP32", "1.5", "a number within FP32 range"],
    ["FP32", 1e39, "a number within FP32 range"],
    ["FP16", 70000, "a number within FP16 range"],
    ["FP64", null, "a number within FP64 range"],
    ["BYTES", 5, "a string"],
    ["INT16", [1], "an integer in [-32768, 32767]"],
  ])("%s element %j is rejected with its input and index", (datatype, bad, expectation) => {
    const data = [datatype === "BYTES" ? "ok" : 0, bad];
    expectBadInput(
      () =>
        decodeInferRequest(
          request(
            { name: "ok", shape: [1], datatype: "INT8", data: [1] },
            { name: "x", shape: [2], datatype, data },
          ),
        ),
      `inputs[1] ("x"): element 1 must be ${expectation}`,
    );
  });

  test("header length larger than the body, or not an integer", () => {
    const body = request({ name: "a", shape: [1], datatype: "INT8", data: [1] });
    expectBadInput(
      () => decodeInferRequest(body, body.length + 1),
      `Inference-Header-Content-Length is ${body.length + 1} but the body has only ${body.length} bytes`,
    );
    for (const headerLength of [1.5, Number.NaN, -1, Number.POSITIVE_INFINITY]) {
      expectBadInput(
        () => decodeInferRequest(body, headerLength),
        /Inference-Header-Content-Length must be a non-negative integer/,
      );
    }
  });

  test("binary data sizes that do not add up to what follows the header", () => {
    const header = {
      inputs: [{ name: "a", shape: [2], datatype: "INT16", parameters: { binary_data_size: 4 } }],
    };
    const short = binaryBody(header, Uint8Array.of(1, 2, 3));
    expectBadInput(
      () => decodeInferRequest(short.body, short.headerLength),
      /binary_data_size values add up to 4 bytes but 3 bytes follow the JSON header/,
    );
    const long = binaryBody(header, new Uint8Array(5));
    expectBadInput(
      () => decodeInferRequest(long.body, long.headerLength),
      /add up to 4 bytes but 5 bytes follow/,
    );
    const wrongSize = binaryBody(
      { inputs: [{ name: "a", shape: [2], datatype: "INT16", parameters: { binary_data_size: 3 } }] },
      new Uint8Array(3),
    );
    expectBadInput(
      () => decodeInferRequest(wrongSize.body, wrongSize.headerLength),
      'inputs[0] ("a"): binary_data_size is 3 bytes but shape [2] of INT16 needs 4',
    );
    const strayBytes = binaryBody(
      { inputs: [{ name: "a", shape: [1], datatype: "INT8", data: [1] }] },
      Uint8Array.of(1),
    );
    expectBadInput(
      () => decodeInferRequest(strayBytes.body, strayBytes.headerLength),
      /add up to 0 bytes but 1 bytes/,
    );
  });

  test("binary_data_size without a header length, with data, or neither", () => {
    const binaryInput = { name: "a", shape: [1], datatype: "INT8", parameters: { binary_data_size: 1 } };
    expectBadInput(
      () => decodeInferRequest(request(binaryInput)),
      /has parameters.binary_data_size but the body has no binary part \(no Inference-Header-Content-Length\)/,
    );
    const both = binaryBody({ inputs: [{ ...binaryInput, data: [1] }] }, Uint8Array.of(1));
    expectBadInput(
      () => decodeInferRequest(both.body, both.headerLength),
      /has both data and parameters.binary_data_size/,
    );
    expectBadInput(
      () => decodeInferRequest(request({ name: "a", shape: [1], datatype: "INT8" })),
      'inputs[0] ("a"): has neither data nor parameters.binary_data_size',
    );
  });

  test("malformed BYTES elements", () => {
    const cases: [Uint8Array, number, RegExp][] = [
      [
        lengthPrefixed(utf8.encode("abc")).subarray(0, 6),
        1,
        /element 0 is 3 bytes long but only 2 bytes are left/,
      ],
      [
        Uint8Array.of(...lengthPrefixed(utf8.encode("a")), 9, 9, 9, 9, 9),
        1,
        /5 bytes are left over after 1 element$/,
      ],
      [Uint8Array.of(0, 0, 0, 0, 0, 0), 1, /2 bytes are left over after 1 element$/],
      [lengthPrefixed(new Uint8Array(0)), 2, /4 bytes cannot hold 2 BYTES elements/],
      [Uint8Array.of(1, 0, 0, 0, 0x78, 0, 0, 0), 2, /binary data ends before the length of element 1/],
    ];
    for (const [bytes, count, message] of cases) {
      const { body, headerLength } = binaryBody(
        {
          inputs: [
            { name: "s", shape: [count], datatype: "BYTES", parameters: { binary_data_size: bytes.length } },
          ],
        },
        bytes,
      );
      expectBadInput(() => decodeInferRequest(body, headerLength), message);
    }
  });

  test("hostile shapes are refused before anything is allocated", () => {
    expectBadInput(
      () =>
        decodeInferRequest(
          request({ name: "a", shape: [2 ** 30, 2 ** 30, 2 ** 30], datatype: "FP64", data: [] }),
        ),
      'inputs[0] ("a"): shape [1073741824, 1073741824, 1073741824] has too many elements',
    );
    expectBadInput(
      () => decodeInferRequest(request({ name: "a", shape: [4e15], datatype: "FP64", data: [] })),
      "needs 4000000000000000 elements but data has 0",
    );
    const fixed = binaryBody(
      { inputs: [{ name: "a", shape: [2 ** 40], datatype: "FP32", parameters: { binary_data_size: 4 } }] },
      new Uint8Array(4),
    );
    expectBadInput(
      () => decodeInferRequest(fixed.body, fixed.headerLength),
      /binary_data_size is 4 bytes but shape/,
    );
    const strings = binaryBody(
      { inputs: [{ name: "a", shape: [2 ** 40], datatype: "BYTES", parameters: { binary_data_size: 8 } }] },
      new Uint8Array(8),
    );
    expectBadInput(
      () => decodeInferRequest(strings.body, strings.headerLength),
      /cannot hold 1099511627776 BYTES/,
    );
    expectBadInput(
      () => decodeInferRequest(request({ name: "a", shape: [1e300], datatype: "FP64", data: [] })),
      /inputs\[0\]\.shape\[0\]: expected a non-negative integer/,
    );
  });

  test("a zero dimension makes an empty tensor however large the other dimensions are", () => {
    const decoded = decodeInferRequest(
      request({ name: "a", shape: [2 ** 40, 2 ** 40, 0], datatype: "FP64", data: [] }),
    );
    expect(decoded.inputs[0]?.data).toEqual(new Float64Array(0));
  });

  test("duplicate tensor names", () => {
    const input = { name: "a", shape: [1], datatype: "INT8", data: [1] };
    expectBadInput(() => decodeInferRequest(request(input, input)), 'inputs[1]: duplicate name "a"');
    expectBadInput(
      () => decodeInferRequest(jsonBody({ inputs: [], outputs: [{ name: "y" }, { name: "y" }] })),
      'outputs[1]: duplicate name "y"',
    );
  });
});

// ---------------------------------------------------------------------------------------------------------
// Properties

describe("properties", () => {
  test("responses round-trip arbitrary tensors, each output JSON or binary", () => {
    fc.assert(
      fc.property(tensorsArbitrary(true), (entries) => {
        const outputs = entries.map((entry) => entry.tensor);
        const binaryNames = new Set(
          entries.filter((entry) => entry.binary).map((entry) => entry.tensor.name),
        );
        const encoded = encodeInferResponse({ model_name: "m", outputs }, (name) => binaryNames.has(name));
        expect(decodeInferResponse(encoded.body, encoded.headerLength).outputs).toEqual(outputs);
      }),
      { numRuns: 200 },
    );
  });

  test("requests round-trip arbitrary tensors as JSON and as binary", () => {
    fc.assert(
      fc.property(tensorsArbitrary(false), fc.boolean(), (entries, binaryInputs) => {
        const inputs = entries.map((entry) => entry.tensor);
        const encoded = encodeInferRequest({ inputs }, { binaryInputs });
        expect(decodeInferRequest(encoded.body, encoded.headerLength).inputs).toEqual(inputs);
      }),
      { numRuns: 200 },
    );
  });

  const onlyBadInput = (action: () => unknown) => {
    try {
      action();
    } catch (error) {
      expect(error).toBeInstanceOf(SwitchyardError);
      expect((error as SwitchyardError).code).toBe("bad_input");
    }
  };

  test("arbitrary bytes only ever fail as bad input", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 200 }),
        fc.option(fc.integer({ min: -2, max: 210 })),
        (body, length) => {
          onlyBadInput(() => decodeInferRequest(body, length ?? undefined));
          onlyBadInput(() => decodeInferResponse(body, length ?? undefined));
        },
      ),
      { numRuns: 500 },
    );
  });

  const jsonish = fc.oneof(fc.jsonValue(), fc.integer(), fc.string(), fc.constant(null));
  const almostValidInput = fc.record(
    {
      name: fc.oneof(fc.constantFrom("a", "b"), jsonish),
      shape: fc.oneof(fc.array(fc.integer({ min: -1, max: 4 }), { maxLength: 3 }), jsonish),
      datatype: fc.oneof(fc.constantFrom(...DATATYPES, "FP8"), jsonish),
      data: fc.oneof(
        fc.array(fc.oneof(jsonish, fc.array(jsonish, { maxLength: 4 })), { maxLength: 8 }),
        jsonish,
      ),
      parameters: fc.oneof(fc.record({ binary_data_size: fc.integer({ min: -1, max: 40 }) }), jsonish),
    },
    { requiredKeys: [] },
  );

  test("arbitrary JSON-ish requests, with or without a binary tail, only ever fail as bad input", () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.jsonValue(),
          fc.record({
            inputs: fc.array(almostValidInput, { maxLength: 3 }),
            outputs: fc.option(jsonish),
            parameters: fc.option(jsonish),
          }),
        ),
        fc.option(fc.uint8Array({ maxLength: 40 })),
        (header, tail) => {
          const { body, headerLength } = binaryBody(header, tail ?? new Uint8Array(0));
          onlyBadInput(() => decodeInferRequest(body, tail === null ? undefined : headerLength));
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe("bodies that are views into a larger buffer", () => {
  test("a binary request inside a Node Buffer pool decodes its own bytes, not its neighbours'", () => {
    const tensor: Tensor = { name: "x", datatype: "FP32", shape: [2, 2], data: Float32Array.of(1, 2, 3, 4) };
    const words: Tensor = {
      name: "w",
      datatype: "BYTES",
      shape: [2],
      data: [new TextEncoder().encode("ab"), new TextEncoder().encode("c")],
    };
    const encoded = encodeInferRequest({ inputs: [tensor, words] }, { binaryInputs: true });
    // What ws hands out: a Buffer viewing part of a bigger pooled ArrayBuffer, with junk around it.
    const pool = Buffer.alloc(encoded.body.length + 64, 0xff);
    pool.set(encoded.body, 32);
    const view = pool.subarray(32, 32 + encoded.body.length);
    const decoded = decodeInferRequest(view, encoded.headerLength);
    expect(decoded.inputs[0]?.data).toEqual(Float32Array.of(1, 2, 3, 4));
    expect(decoded.inputs[1]?.data).toEqual(words.data);
    pool.fill(0);
    expect(decoded.inputs[0]?.data).toEqual(Float32Array.of(1, 2, 3, 4));
  });
});

describe("raw tensor bytes outside a request (dataFromBinary)", () => {
  test("reads exactly its elements, copied out, and says so when the bytes hold more or less", () => {
    const bytes = new Uint8Array(Float32Array.of(1.5, -2).buffer);
    const data = dataFromBinary("FP32", bytes, 2);
    expect(data).toEqual(Float32Array.of(1.5, -2));
    bytes[0] = 9;
    expect(data).toEqual(Float32Array.of(1.5, -2));
    expect(() => dataFromBinary("FP32", bytes, 3)).toThrow("8 bytes are not 3 FP32 elements (12 bytes)");
    expect(() => dataFromBinary("INT16", bytes, 3)).toThrow("8 bytes are not 3 INT16 elements (6 bytes)");
    expect(dataFromBinary("BYTES", new Uint8Array([1, 0, 0, 0, 65]), 1)).toEqual([new Uint8Array([65])]);
    expect(() => dataFromBinary("BYTES", new Uint8Array([1, 0, 0, 0]), 1)).toThrow(
      "element 0 is 1 bytes long but only 0 bytes are left",
    );
  });
});
