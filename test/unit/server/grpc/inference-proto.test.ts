import { describe, expect, test } from "vitest";
import { inferenceService } from "../../../../backend/server/grpc/grpc-proto.ts";

// The agent's inference.proto against the protocol's wire layout, written here by hand from KServe's
// grpc_predict_v2.proto and Triton's grpc_service.proto (field numbers and wire types), not from the agent's
// file: a client built from either upstream file sends these bytes and reads these answers. The tests'
// gRPC client loads the agent's own file, so only this can catch a field number that drifted.

const service = inferenceService();
const text = new TextEncoder();

/** A protobuf varint. */
function varint(value: number): number[] {
  const bytes: number[] = [];
  let rest = value;
  while (rest >= 0x80) {
    bytes.push((rest & 0x7f) | 0x80);
    rest = Math.floor(rest / 0x80);
  }
  bytes.push(rest);
  return bytes;
}
/** A length-delimited field (wire type 2): strings, bytes, sub-messages, packed repeated numbers. */
/** A field's key: its number and wire type, itself a varint (two bytes from field 16 on). */
const key = (number: number, wireType: number) => varint((number << 3) | wireType);
const field = (number: number, payload: ArrayLike<number>) => [
  ...key(number, 2),
  ...varint(payload.length),
  ...Array.from(payload),
];
const string = (number: number, value: string) => field(number, text.encode(value));
/** A varint field (wire type 0): bools, int64. */
const scalar = (number: number, value: number) => [...key(number, 0), ...varint(value)];
const bytes = (...parts: number[][]) => Buffer.from(parts.flat());

const method = (name: string) => {
  const definition = service[name];
  if (definition === undefined) throw new Error(`no ${name} in inference.proto`);
  return definition;
};

describe("inference.proto on the wire", () => {
  test("the service and its calls have the protocol's names", () => {
    expect(method("ModelInfer").path).toBe("/inference.GRPCInferenceService/ModelInfer");
    expect(Object.keys(service).sort()).toEqual(
      [
        "ModelInfer",
        "ModelConfig",
        "ModelMetadata",
        "ModelStatistics",
        "ModelReady",
        "ModelStreamInfer",
        "RepositoryIndex",
        "RepositoryModelLoad",
        "RepositoryModelUnload",
        "ServerLive",
        "ServerMetadata",
        "ServerReady",
        "SystemSharedMemoryStatus",
        "SystemSharedMemoryRegister",
        "SystemSharedMemoryUnregister",
        "CudaSharedMemoryStatus",
        "CudaSharedMemoryRegister",
        "CudaSharedMemoryUnregister",
        "LogSettings",
      ].sort(),
    );
    expect(method("ModelStreamInfer").requestStream && method("ModelStreamInfer").responseStream).toBe(true);
  });

  test("a ModelInferRequest as a client lays it out is read field by field", () => {
    const fp32 = new Float32Array([1.5, -2]);
    const wire = bytes(
      string(1, "mlp"), // model_name
      string(2, "3"), // model_version
      string(3, "req-1"), // id
      field(4, [...string(1, "timeout"), ...field(2, scalar(2, 5000))]), // parameters: int64_param
      field(5, [
        // inputs[0]: name, datatype, shape (packed int64), parameters (bool_param), contents (packed fp32)
        ...string(1, "x"),
        ...string(2, "FP32"),
        ...field(3, [1, 2]),
        ...field(4, [...string(1, "flag"), ...field(2, scalar(1, 1))]),
        ...field(5, field(6, new Uint8Array(fp32.buffer))),
      ]),
      field(6, [...string(1, "y"), ...field(2, [...string(1, "classification"), ...field(2, scalar(2, 3))])]), // outputs
      field(7, [9, 8, 7]), // raw_input_contents
    );
    const message = method("ModelInfer").requestDeserialize(wire);
    expect(message).toMatchObject({
      model_name: "mlp",
      model_version: "3",
      id: "req-1",
      parameters: { timeout: { int64_param: "5000", parameter_choice: "int64_param" } },
      inputs: [
        {
          name: "x",
          datatype: "FP32",
          shape: ["1", "2"],
          parameters: { flag: { bool_param: true } },
          contents: { fp32_contents: [1.5, -2] },
        },
      ],
      outputs: [{ name: "y", parameters: { classification: { int64_param: "3" } } }],
    });
    expect([...((message as { raw_input_contents: Buffer[] }).raw_input_contents[0] ?? [])]).toEqual([
      9, 8, 7,
    ]);
  });

  test("a ModelInferResponse is written as a client reads it", () => {
    const answer = method("ModelInfer").responseSerialize({
      model_name: "mlp",
      model_version: "1",
      id: "req-1",
      outputs: [{ name: "y", datatype: "FP32", shape: [1] }],
      raw_output_contents: [Uint8Array.of(0, 0, 128, 63)],
    });
    expect([...answer]).toEqual(
      [
        string(1, "mlp"),
        string(2, "1"),
        string(3, "req-1"),
        field(5, [...string(1, "y"), ...string(2, "FP32"), ...field(3, [1])]), // outputs
        field(6, [0, 0, 128, 63]), // raw_output_contents
      ].flat(),
    );
  });

  test("a ModelStreamInferResponse: error_message 1, infer_response 2", () => {
    const answer = method("ModelStreamInfer").responseSerialize({
      error_message: "failed",
      infer_response: { id: "req-2" },
    });
    expect([...answer]).toEqual([string(1, "failed"), field(2, string(3, "req-2"))].flat());
  });

  test("metadata and readiness messages", () => {
    expect(method("ModelMetadata").requestDeserialize(bytes(string(1, "m"), string(2, "2")))).toMatchObject({
      name: "m",
      version: "2",
    });
    const metadata = method("ModelMetadata").responseSerialize({
      name: "m",
      versions: ["1"],
      platform: "onnxruntime_onnx",
      inputs: [{ name: "x", datatype: "FP32", shape: [-1] }],
      outputs: [],
    });
    expect([...metadata]).toEqual(
      [
        string(1, "m"),
        string(2, "1"),
        string(3, "onnxruntime_onnx"),
        // shape [-1]: a negative int64 is ten varint bytes.
        field(4, [
          ...string(1, "x"),
          ...string(2, "FP32"),
          ...field(3, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]),
        ]),
      ].flat(),
    );
    expect([
      ...method("ServerMetadata").responseSerialize({ name: "a", version: "0.1.0", extensions: ["e"] }),
    ]).toEqual([string(1, "a"), string(2, "0.1.0"), string(3, "e")].flat());
    expect([...method("ModelReady").responseSerialize({ ready: true })]).toEqual(scalar(1, 1));
  });

  test("repository calls: Triton's layout (model_name 2) and KServe's (the model in field 1)", () => {
    const load = method("RepositoryModelLoad");
    expect(load.requestDeserialize(bytes(string(2, "m")))).toMatchObject({
      repository_name: "",
      model_name: "m",
    });
    expect(load.requestDeserialize(bytes(string(1, "m")))).toMatchObject({
      repository_name: "m",
      model_name: "",
    });
    // KServe's answer: model_name 1, isLoaded 2.
    expect([...load.responseSerialize({ model_name: "m", isLoaded: true })]).toEqual(
      [string(1, "m"), scalar(2, 1)].flat(),
    );
    const index = method("RepositoryIndex");
    expect(index.requestDeserialize(bytes(scalar(2, 1)))).toMatchObject({ ready: true });
    expect([
      ...index.responseSerialize({ models: [{ name: "m", version: "1", state: "READY", reason: "" }] }),
      // An empty string that is set is written, empty: readers take it as the default.
    ]).toEqual(field(1, [...string(1, "m"), ...string(2, "1"), ...string(3, "READY"), ...string(4, "")]));
  });

  test("Triton's shared memory calls: register name 1, key 2, offset 3, byte_size 4; status a map by name", () => {
    const register = method("SystemSharedMemoryRegister").requestDeserialize(
      bytes(string(1, "in"), string(2, "/input0"), scalar(3, 16), scalar(4, 4096)),
    );
    expect(register).toEqual({ name: "in", key: "/input0", offset: "16", byte_size: "4096" });
    expect(method("SystemSharedMemoryUnregister").requestDeserialize(bytes(string(1, "in")))).toEqual({
      name: "in",
    });
    expect(method("SystemSharedMemoryStatus").requestDeserialize(bytes())).toEqual({ name: "" });
    const region = [...string(1, "in"), ...string(2, "/input0"), ...scalar(3, 16), ...scalar(4, 4096)];
    // A map is a repeated entry message: its key 1, its value 2.
    expect([
      ...method("SystemSharedMemoryStatus").responseSerialize({
        regions: { in: { name: "in", key: "/input0", offset: 16, byte_size: 4096 } },
      }),
    ]).toEqual(field(1, [...string(1, "in"), ...field(2, region)]));
    // CUDA's: name 1, raw_handle 2, device_id 3, byte_size 4 (read, then refused).
    expect(
      method("CudaSharedMemoryRegister").requestDeserialize(
        bytes(string(1, "gpu"), field(2, [1, 2]), scalar(3, 1), scalar(4, 64)),
      ),
    ).toMatchObject({ name: "gpu", device_id: "1", byte_size: "64" });
  });

  test("Triton's LogSettings: a map by name of values, bool 1, uint32 2, string 3", () => {
    const request = method("LogSettings").requestDeserialize(
      bytes(
        field(1, [...string(1, "log_info"), ...field(2, scalar(1, 0))]),
        field(1, [...string(1, "log_verbose_level"), ...field(2, scalar(2, 1))]),
        field(1, [...string(1, "log_format"), ...field(2, string(3, "json"))]),
      ),
    );
    expect(request).toMatchObject({
      settings: {
        log_info: { parameter_choice: "bool_param", bool_param: false },
        log_verbose_level: { parameter_choice: "uint32_param", uint32_param: 1 },
        log_format: { parameter_choice: "string_param", string_param: "json" },
      },
    });
    expect([
      ...method("LogSettings").responseSerialize({ settings: { log_file: { string_param: "" } } }),
    ]).toEqual(field(1, [...string(1, "log_file"), ...field(2, string(3, ""))]));
  });

  test("Triton's ModelConfig (model_config.proto's numbers) and ModelStatistics", () => {
    const config = method("ModelConfig").responseSerialize({
      config: {
        name: "m",
        platform: "onnxruntime_onnx",
        max_batch_size: 8,
        input: [{ name: "x", data_type: "TYPE_FP32", dims: [16] }],
        output: [{ name: "y", data_type: "TYPE_INT64", dims: [4], label_filename: "labels.txt" }],
        dynamic_batching: { preferred_batch_size: [4], max_queue_delay_microseconds: 100 },
        instance_group: [{ name: "m_0", kind: "KIND_CPU", count: 2 }],
        backend: "onnxruntime",
      },
    });
    expect([...config]).toEqual(
      field(1, [
        ...string(1, "m"),
        ...string(2, "onnxruntime_onnx"),
        ...scalar(4, 8), // max_batch_size
        ...field(5, [...string(1, "x"), ...scalar(2, 11), ...field(4, [16])]), // input: TYPE_FP32 = 11, dims
        ...field(6, [...string(1, "y"), ...scalar(2, 9), ...field(3, [4]), ...string(4, "labels.txt")]), // output
        ...field(7, [...string(1, "m_0"), ...scalar(2, 2), ...scalar(4, 2)]), // instance_group: count, KIND_CPU = 2
        ...field(11, [...field(1, [4]), ...scalar(2, 100)]), // dynamic_batching
        ...string(17, "onnxruntime"), // backend
      ]),
    );
    const stats = method("ModelStatistics").responseSerialize({
      model_stats: [
        {
          name: "m",
          version: "1",
          last_inference: 5,
          inference_count: 3,
          execution_count: 2,
          inference_stats: { success: { count: 3, ns: 7 } },
          batch_stats: [{ batch_size: 2, compute_infer: { count: 1, ns: 9 } }],
        },
      ],
    });
    expect([...stats]).toEqual(
      field(1, [
        ...string(1, "m"),
        ...string(2, "1"),
        ...scalar(3, 5),
        ...scalar(4, 3),
        ...scalar(5, 2),
        ...field(6, field(1, [...scalar(1, 3), ...scalar(2, 7)])), // inference_stats.success
        ...field(7, [...scalar(1, 2), ...field(3, [...scalar(1, 1), ...scalar(2, 9)])]), // batch_stats
      ]),
    );
  });
});
