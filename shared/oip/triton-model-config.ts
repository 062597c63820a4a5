/**
 * A model's configuration in the JSON form of Triton's model configuration (`GET /v2/models/{m}/config`),
 * which tritonclient's `get_model_config`, perf_analyzer and Model Analyzer read: perf_analyzer, for one,
 * shapes its requests by `max_batch_size` and `dims`. Built the same way by the standalone agent and by the
 * gateway, from the model's signature, the batching its config.json declares, and the replicas that serve it.
 *
 * With `max_batch_size` above 0 the dims leave out the batch dimension, as Triton's do.
 */
import { batchesAlongFirstDim, type DeclaredBatching } from "../protocol/model-signatures.ts";
import type { Datatype } from "./datatypes.ts";
import type { TensorMetadata } from "./schemas.ts";

const TRITON_TYPE: Record<Datatype, string> = {
  BOOL: "TYPE_BOOL",
  UINT8: "TYPE_UINT8",
  UINT16: "TYPE_UINT16",
  UINT32: "TYPE_UINT32",
  UINT64: "TYPE_UINT64",
  INT8: "TYPE_INT8",
  INT16: "TYPE_INT16",
  INT32: "TYPE_INT32",
  INT64: "TYPE_INT64",
  FP16: "TYPE_FP16",
  FP32: "TYPE_FP32",
  FP64: "TYPE_FP64",
  BYTES: "TYPE_STRING",
};

export interface TritonInstanceGroup {
  name: string;
  kind: "KIND_GPU" | "KIND_CPU";
  count: number;
  /** GPU ids (KIND_GPU only): several hosts' replicas may share an id. */
  gpus: number[];
}

export interface TritonModelConfig {
  name: string;
  platform: "onnxruntime_onnx";
  backend: "onnxruntime";
  version_policy: { latest: { num_versions: 1 } };
  max_batch_size: number;
  input: Array<{
    name: string;
    data_type: string;
    format: "FORMAT_NONE";
    dims: number[];
    is_shape_tensor: false;
    allow_ragged_batch: false;
    optional: false;
  }>;
  output: Array<{
    name: string;
    data_type: string;
    dims: number[];
    label_filename: "";
    is_shape_tensor: false;
  }>;
  dynamic_batching?: { preferred_batch_size: number[]; max_queue_delay_microseconds: number };
  instance_group: TritonInstanceGroup[];
  default_model_filename: "model.onnx";
  parameters: Record<string, never>;
}

export interface ModelConfigSource {
  name: string;
  inputs: readonly TensorMetadata[];
  outputs: readonly TensorMetadata[];
  batching: DeclaredBatching;
  /** The device of every replica that serves the model: "cpu" or "cuda:<id>". */
  devices: readonly string[];
}

export function tritonModelConfig(source: ModelConfigSource): TritonModelConfig {
  const batched = batchesAlongFirstDim(source.batching);
  const dims = (shape: readonly number[]) => (batched ? shape.slice(1) : [...shape]);
  const dynamic = source.batching.dynamic_batching;
  return {
    name: source.name,
    platform: "onnxruntime_onnx",
    backend: "onnxruntime",
    version_policy: { latest: { num_versions: 1 } },
    max_batch_size: source.batching.max_batch_size,
    input: source.inputs.map((input) => ({
      name: input.name,
      data_type: TRITON_TYPE[input.datatype],
      format: "FORMAT_NONE",
      dims: dims(input.shape),
      is_shape_tensor: false,
      allow_ragged_batch: false,
      optional: false,
    })),
    output: source.outputs.map((output) => ({
      name: output.name,
      data_type: TRITON_TYPE[output.datatype],
      dims: dims(output.shape),
      label_filename: "",
      is_shape_tensor: false,
    })),
    ...(dynamic === null ? {} : { dynamic_batching: { ...dynamic } }),
    instance_group: instanceGroups(source.name, source.devices),
    default_model_filename: "model.onnx",
    parameters: {},
  };
}

/** One group for the GPU replicas and one for the CPU replicas, as Triton's instance_group lists them. */
function instanceGroups(model: string, devices: readonly string[]): TritonInstanceGroup[] {
  const gpus = devices.flatMap((device) => (device.startsWith("cuda:") ? [Number(device.slice(5))] : []));
  const cpus = devices.length - gpus.length;
  const groups: TritonInstanceGroup[] = [];
  if (gpus.length > 0) {
    const ids = [...new Set(gpus)].sort((a, b) => a - b);
    groups.push({ name: `${model}_${groups.length}`, kind: "KIND_GPU", count: gpus.length, gpus: ids });
  }
  if (cpus > 0) groups.push({ name: `${model}_${groups.length}`, kind: "KIND_CPU", count: cpus, gpus: [] });
  return groups;
}
