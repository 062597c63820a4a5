import { describe, expect, test } from "vitest";
import { tritonModelConfig } from "../../../shared/oip/triton-model-config.ts";

describe("Triton's model configuration", () => {
  const inputs = [
    { name: "image", datatype: "FP32" as const, shape: [-1, 3, -1, -1] },
    { name: "text", datatype: "BYTES" as const, shape: [-1] },
  ];
  const outputs = [{ name: "maps", datatype: "FP16" as const, shape: [-1, 1, -1, -1] }];

  test("without declared batching the dims are the full shapes and there is no dynamic batcher", () => {
    const config = tritonModelConfig({
      name: "det",
      inputs,
      outputs,
      batching: { max_batch_size: 0, dynamic_batching: null },
      devices: ["cpu", "cpu"],
    });
    expect(config).toMatchObject({
      name: "det",
      platform: "onnxruntime_onnx",
      max_batch_size: 0,
      input: [
        { name: "image", data_type: "TYPE_FP32", dims: [-1, 3, -1, -1] },
        { name: "text", data_type: "TYPE_STRING", dims: [-1] },
      ],
      output: [{ name: "maps", data_type: "TYPE_FP16", dims: [-1, 1, -1, -1] }],
      instance_group: [{ name: "det_0", kind: "KIND_CPU", count: 2, gpus: [] }],
    });
    expect(config.dynamic_batching).toBeUndefined();
  });

  test("declared batching drops the batch dimension; GPU replicas group by id across hosts", () => {
    const config = tritonModelConfig({
      name: "det",
      inputs,
      outputs,
      batching: {
        max_batch_size: 8,
        dynamic_batching: { preferred_batch_size: [4], max_queue_delay_microseconds: 100 },
      },
      devices: ["cuda:1", "cuda:0", "cuda:0", "cpu"],
    });
    expect(config.input.map((input) => input.dims)).toEqual([[3, -1, -1], []]);
    expect(config.dynamic_batching).toEqual({ preferred_batch_size: [4], max_queue_delay_microseconds: 100 });
    expect(config.instance_group).toEqual([
      { name: "det_0", kind: "KIND_GPU", count: 3, gpus: [0, 1] },
      { name: "det_1", kind: "KIND_CPU", count: 1, gpus: [] },
    ]);
  });
});
