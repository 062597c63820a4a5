import fc from "fast-check";
import { describe, expect, test } from "vitest";
import {
  decodeGrpcInferRequest,
  grpcInferResponse,
  inferResponsePieces,
  streamAnswerPieces,
} from "../../../../backend/server/grpc/grpc-infer.ts";
import type { ModelInferRequestMessage } from "../../../../backend/server/grpc/grpc-messages.ts";
import { inferenceService } from "../../../../backend/server/grpc/grpc-proto.ts";
import type { Served } from "../../../../backend/server/standalone-infer.ts";
import { SwitchyardError } from "../../../../shared/errors.ts";
import {
  type DecodedInferRequest,
  decodeInferRequest,
  encodeInferRequest,
  tensorBinary,
} from "../../../../shared/oip/codec.ts";
import type { Tensor } from "../../../../shared/oip/tensor.ts";
import { contentsOf } from "../../../support/grpc-contents.ts";
import { tensorsArbitrary } from "../../../support/tensor-arbitraries.ts";

// ModelInfer's requests as they cross the wire: a client's object serialized with the protocol's .proto and
// read back as the agent's server reads it (grpc-proto.ts), then decoded. Whatever a client sends, the
// tensors are those an HTTP body with the same tensors decodes to, or the answer is a 400.

const modelInfer = inferenceService().ModelInfer;
if (modelInfer === undefined) throw new Error("no ModelInfer in inference.proto");

/** A client's request as the server receives it. */
function received(request: object): ModelInferRequestMessage {
  return modelInfer?.requestDeserialize(modelInfer.requestSerialize(request)) as ModelInferRequestMessage;
}

const described = (tensor: Tensor) => ({ name: tensor.name, datatype: tensor.datatype, shape: tensor.shape });

/** The same tensors through the HTTP codec: what the gRPC path must agree with. */
const overHttp = (inputs: Tensor[]) => {
  const encoded = encodeInferRequest({ inputs }, { binaryInputs: true });
  return decodeInferRequest(encoded.body, encoded.headerLength).inputs;
};

function expectBadInput(action: () => unknown, message: string): void {
  try {
    action();
  } catch (error) {
    expect(error).toBeInstanceOf(SwitchyardError);
    expect((error as SwitchyardError).code).toBe("bad_input");
    expect((error as Error).message).toBe(message);
    return;
  }
  throw new Error("no error");
}

describe("decodeGrpcInferRequest", () => {
  test("tensors in raw_input_contents decode to what the same binary HTTP body decodes to", () => {
    fc.assert(
      fc.property(tensorsArbitrary(true), (entries) => {
        const inputs = entries.map((entry) => entry.tensor);
        const message = received({
          model_name: "m",
          inputs: inputs.map(described),
          raw_input_contents: inputs.map((tensor) => Buffer.from(tensorBinary(tensor))),
        });
        expect(decodeGrpcInferRequest(message, undefined).inputs).toEqual(overHttp(inputs));
      }),
      { numRuns: 200 },
    );
  });

  test("tensors in typed contents decode to the same tensors, 64-bit integers and arbitrary bytes exact", () => {
    fc.assert(
      fc.property(tensorsArbitrary(true), (entries) => {
        const inputs = entries.map((entry) => entry.tensor).filter((tensor) => tensor.datatype !== "FP16");
        const message = received({
          model_name: "m",
          inputs: inputs.map((tensor) => ({ ...described(tensor), contents: contentsOf(tensor) })),
        });
        expect(decodeGrpcInferRequest(message, undefined).inputs).toEqual(overHttp(inputs));
      }),
      { numRuns: 200 },
    );
  });

  test("NaN and the infinities in float contents (a counterexample of the property above)", () => {
    const x: Tensor = {
      name: "x",
      datatype: "FP32",
      shape: [3],
      data: Float32Array.of(0, Number.POSITIVE_INFINITY, Number.NaN),
    };
    const y: Tensor = {
      name: "y",
      datatype: "FP64",
      shape: [1],
      data: Float64Array.of(Number.NEGATIVE_INFINITY),
    };
    const message = received({
      model_name: "m",
      inputs: [x, y].map((tensor) => ({ ...described(tensor), contents: contentsOf(tensor) })),
    });
    expect(decodeGrpcInferRequest(message, undefined).inputs).toEqual([x, y]);
  });

  test("request, tensor and output parameters arrive as JSON would carry them", () => {
    const decoded = decodeGrpcInferRequest(
      received({
        model_name: "m",
        id: "r1",
        parameters: {
          timeout: { int64_param: "250000" },
          huge: { uint64_param: "18446744073709551615" },
          ratio: { double_param: 0.25 },
          flag: { bool_param: true },
          tag: { string_param: "x" },
        },
        inputs: [
          {
            name: "x",
            datatype: "INT32",
            shape: [1],
            contents: { int_contents: [7] },
            parameters: { note: { string_param: "n" } },
          },
        ],
        outputs: [{ name: "y", parameters: { classification: { int64_param: "3" } } }],
      }),
      undefined,
    );
    expect(decoded.id).toBe("r1");
    // Beyond 2^53 a 64-bit value stays its exact decimal text.
    expect(decoded.parameters).toEqual({
      timeout: 250000,
      huge: "18446744073709551615",
      ratio: 0.25,
      flag: true,
      tag: "x",
    });
    expect(decoded.inputs[0]?.parameters).toEqual({ note: "n" });
    expect(decoded.outputs).toEqual([{ name: "y", binary: false, classification: 3, parameters: {} }]);
  });

  test("what only gRPC can get wrong is said in gRPC's terms", () => {
    const x = { name: "x", datatype: "FP32", shape: [2] };
    const eightBytes = Buffer.alloc(8);
    expectBadInput(
      () =>
        decodeGrpcInferRequest(received({ inputs: [x], raw_input_contents: [Buffer.alloc(4)] }), undefined),
      'inputs[0] ("x"): raw_input_contents[0] is 4 bytes but shape [2] of FP32 needs 8',
    );
    expectBadInput(
      () =>
        decodeGrpcInferRequest(
          received({ inputs: [x, { ...x, name: "z" }], raw_input_contents: [eightBytes] }),
          undefined,
        ),
      'inputs[1] ("z"): has no raw_input_contents[1]',
    );
    expectBadInput(
      () =>
        decodeGrpcInferRequest(
          received({
            inputs: [{ ...x, contents: { fp32_contents: [1, 2] } }],
            raw_input_contents: [eightBytes],
          }),
          undefined,
        ),
      'inputs[0] ("x"): has contents but the request has raw_input_contents: send every input\'s data in one of them',
    );
    expectBadInput(
      () => decodeGrpcInferRequest(received({ inputs: [x] }), undefined),
      'inputs[0] ("x"): has no data: send it in contents or in raw_input_contents',
    );
    expectBadInput(
      () =>
        decodeGrpcInferRequest(
          received({ inputs: [{ ...x, contents: { fp64_contents: [1, 2] } }] }),
          undefined,
        ),
      'inputs[0] ("x"): has fp64_contents but FP32 is read from fp32_contents',
    );
    expectBadInput(
      () =>
        decodeGrpcInferRequest(
          received({ inputs: [{ ...x, contents: { fp32_contents: [1, 2, 3] } }] }),
          undefined,
        ),
      'inputs[0] ("x"): shape [2] needs 2 elements but data has 3',
    );
    expectBadInput(
      () =>
        decodeGrpcInferRequest(
          received({ inputs: [{ ...x, datatype: "INT8", contents: { int_contents: [1, 300] } }] }),
          undefined,
        ),
      'inputs[0] ("x"): element 1 must be an integer in [-128, 127] for INT8, got 300',
    );
  });

  test("arbitrary requests only ever fail as bad input", () => {
    const int64 = fc.oneof(
      fc.integer({ min: -3, max: 5 }).map(String),
      fc.constantFrom("9007199254740993", "-1"),
    );
    const contents = fc.record(
      {
        bool_contents: fc.array(fc.boolean(), { maxLength: 4 }),
        int_contents: fc.array(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), { maxLength: 4 }),
        int64_contents: fc.array(int64, { maxLength: 4 }),
        uint_contents: fc.array(fc.integer({ min: 0, max: 2 ** 32 - 1 }), { maxLength: 4 }),
        fp32_contents: fc.array(fc.float(), { maxLength: 4 }),
        bytes_contents: fc.array(
          fc.uint8Array({ maxLength: 6 }).map((bytes) => Buffer.from(bytes)),
          { maxLength: 4 },
        ),
      },
      { requiredKeys: [] },
    );
    const input = fc.record(
      {
        name: fc.constantFrom("x", "y", ""),
        datatype: fc.constantFrom("FP32", "INT8", "UINT64", "BYTES", "FP16", "BOOL", "FP8", ""),
        shape: fc.array(int64, { maxLength: 3 }),
        contents,
        parameters: fc.dictionary(
          fc.constantFrom("binary_data_size", "shared_memory_region", "classification", "other"),
          fc.oneof(
            fc.record({ int64_param: int64 }),
            fc.record({ string_param: fc.string({ maxLength: 4 }) }),
            fc.record({ bool_param: fc.boolean() }),
          ),
        ),
      },
      { requiredKeys: ["name", "datatype", "shape"] },
    );
    fc.assert(
      fc.property(
        fc.record(
          {
            id: fc.string({ maxLength: 4 }),
            inputs: fc.array(input, { maxLength: 3 }),
            outputs: fc.array(fc.record({ name: fc.constantFrom("y", "y", "z") }), { maxLength: 3 }),
            raw_input_contents: fc.array(
              fc.uint8Array({ maxLength: 12 }).map((bytes) => Buffer.from(bytes)),
              {
                maxLength: 3,
              },
            ),
          },
          { requiredKeys: [] },
        ),
        (request) => {
          try {
            decodeGrpcInferRequest(received(request), undefined);
          } catch (error) {
            expect(error).toBeInstanceOf(SwitchyardError);
            expect((error as SwitchyardError).code).toBe("bad_input");
          }
        },
      ),
      { numRuns: 1000 },
    );
  });
});

describe("grpcInferResponse", () => {
  test("each output's bytes in raw_output_contents in order; one written to shared memory keeps its place, empty", () => {
    const a: Tensor = { name: "a", datatype: "FP32", shape: [2], data: Float32Array.of(1, 2) };
    const b: Tensor = { name: "b", datatype: "INT64", shape: [1], data: BigInt64Array.of(-3n) };
    // Only what the answer is written from: the model that served, and the outputs.
    const served = {
      outcome: { model: { name: "m", version: "4" } },
      outputs: [a, b],
      servedAt: 0,
    } as unknown as Served;
    const request: DecodedInferRequest = {
      id: "r",
      parameters: {},
      inputs: [],
      outputs: [
        { name: "a", binary: false, parameters: {}, sharedMemory: { region: "out", offset: 0, byteSize: 8 } },
        { name: "b", binary: false, parameters: {} },
      ],
    };
    expect(grpcInferResponse(served, request)).toEqual({
      model_name: "m",
      model_version: "4",
      id: "r",
      outputs: [
        { name: "a", datatype: "FP32", shape: [2] },
        { name: "b", datatype: "INT64", shape: [1] },
      ],
      raw_output_contents: [new Uint8Array(0), tensorBinary(b)],
    });
  });
});

describe("an answer's bytes in pieces", () => {
  const streamInfer = inferenceService().ModelStreamInfer;
  if (streamInfer === undefined) throw new Error("no ModelStreamInfer in inference.proto");
  const serialize = (message: object) => modelInfer.responseSerialize(message) as Uint8Array;

  test("a client reads ModelInferResponse's pieces, bare or inside ModelStreamInferResponse, as the whole message", () => {
    fc.assert(
      fc.property(fc.array(fc.uint8Array({ maxLength: 64 }), { maxLength: 4 }), fc.string(), (raws, id) => {
        const message = {
          model_name: "m",
          model_version: "1",
          id,
          outputs: raws.map((raw, index) => ({ name: `y${index}`, datatype: "UINT8", shape: [raw.length] })),
          raw_output_contents: raws,
        };
        const pieces = inferResponsePieces(message, serialize);
        const whole = Buffer.concat(pieces);
        expect(whole.equals(Buffer.from(serialize(message)))).toBe(true);
        // The outputs' own bytes go as they are, not copied.
        for (const raw of raws) expect(pieces).toContain(raw);
        const streamed = streamInfer.responseDeserialize(Buffer.concat(streamAnswerPieces(pieces)));
        expect(streamed).toEqual(
          streamInfer.responseDeserialize(
            streamInfer.responseSerialize({ error_message: "", infer_response: message }),
          ),
        );
      }),
    );
  });
});
