import { readFileSync } from "node:fs";
import onnxProto from "onnx-proto";
import * as ort from "onnxruntime-node";
import { describe, expect, test } from "vitest";
import { describeOnnxFile } from "../../../backend/models/file-byte-source.ts";
import { sessionSpecs } from "../../../backend/replica/ort-tensors.ts";
import { OnnxFormatError, readOnnxSignature } from "../../../shared/onnx/onnx-signature.ts";
import { type ByteSource, memorySource } from "../../../shared/onnx/protobuf-reader.ts";
import { BIG_MODEL, BROKEN_MODEL, LOADABLE_MODELS, repoModelPath } from "../../fixtures/paths.ts";

const { onnx } = onnxProto;

// The signature read from a model's graph headers is exactly what onnxruntime reports once the model is
// loaded: the gateway answers metadata with it before any agent has loaded the model.

const everyModelFile = LOADABLE_MODELS.flatMap(({ name, versions }) =>
  versions.map((version) => ({
    label: `${name}:${version ?? "(flat)"}`,
    path: repoModelPath(name, version),
  })),
);

describe("readOnnxSignature", () => {
  test.each(everyModelFile)("$label: equals the loaded session's inputs and outputs", async ({ path }) => {
    const session = await ort.InferenceSession.create(path);
    try {
      expect(await describeOnnxFile(path)).toEqual(sessionSpecs(session));
    } finally {
      await session.release();
    }
  });

  test("reads the graph's headers, never the weights", async () => {
    const bytes = readFileSync(repoModelPath(BIG_MODEL));
    let read = 0;
    const counting: ByteSource = {
      size: bytes.byteLength,
      read: async (offset, length) => {
        read += Math.min(length, bytes.byteLength - offset);
        return bytes.subarray(offset, offset + length);
      },
    };
    const signature = await readOnnxSignature(counting);
    expect(signature.inputs.length).toBeGreaterThan(0);
    expect(bytes.byteLength).toBeGreaterThan(8_000_000);
    expect(read).toBeLessThan(10_000);
  });

  test("inputs that are initializers are not inputs; named and unnamed dynamic dimensions are -1", async () => {
    const model = onnx.ModelProto.encode({
      irVersion: 8,
      opsetImport: [{ domain: "", version: 17 }],
      graph: {
        name: "g",
        node: [{ opType: "Add", input: ["x", "bias"], output: ["y"] }],
        initializer: [
          { name: "bias", dims: [3], dataType: onnx.TensorProto.DataType.FLOAT, floatData: [1, 2, 3] },
        ],
        input: [
          tensor("x", onnx.TensorProto.DataType.FLOAT, [{ dimParam: "batch" }, {}, { dimValue: 3 }]),
          tensor("bias", onnx.TensorProto.DataType.FLOAT, [{ dimValue: 3 }]),
        ],
        output: [tensor("y", onnx.TensorProto.DataType.FLOAT, [{ dimParam: "batch" }, {}, { dimValue: 3 }])],
      },
    }).finish();
    const signature = await readOnnxSignature(memorySource(model));
    expect(signature).toEqual({
      inputs: [{ name: "x", datatype: "FP32", shape: [-1, -1, 3] }],
      outputs: [{ name: "y", datatype: "FP32", shape: [-1, -1, 3] }],
    });
    const session = await ort.InferenceSession.create(model);
    try {
      expect(signature).toEqual(sessionSpecs(session));
    } finally {
      await session.release();
    }
  });

  test("what is not an ONNX model is refused with OnnxFormatError", async () => {
    const broken = readFileSync(repoModelPath(BROKEN_MODEL));
    const truncated = readFileSync(repoModelPath(BIG_MODEL)).subarray(0, 4000);
    for (const bytes of [broken, truncated, new Uint8Array(0), new TextEncoder().encode("not a model")]) {
      await expect(readOnnxSignature(memorySource(bytes))).rejects.toBeInstanceOf(OnnxFormatError);
    }
  });
});

function tensor(name: string, elemType: number, dim: object[]) {
  return { name, type: { tensorType: { elemType, shape: { dim } } } };
}
