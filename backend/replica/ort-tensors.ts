import * as ort from "onnxruntime-node";
import { SwitchyardError } from "../../shared/errors.ts";
import { type Datatype, datatypeFromOrt, ORT_TYPE, type TensorData } from "../../shared/oip/datatypes.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";

/** One input or output of a model as OIP metadata describes it: -1 marks a dynamic dimension. */
export interface TensorSpec {
  name: string;
  datatype: Datatype;
  shape: number[];
}

const utf8Decoder = new TextDecoder("utf-8", { fatal: false });
const utf8Encoder = new TextEncoder();

function specOf(metadata: ort.InferenceSession.ValueMetadata): TensorSpec | undefined {
  if (!metadata.isTensor) return undefined;
  const datatype = datatypeFromOrt(metadata.type);
  if (datatype === undefined) return undefined;
  // Symbolic dimensions ("batch") and unknown ones come back as strings or negative numbers.
  const shape = metadata.shape.map((dim) => (typeof dim === "number" && dim >= 0 ? dim : -1));
  return { name: metadata.name, datatype, shape };
}

/** Inputs and outputs of a loaded session, as OIP metadata. Non-tensor values (maps, sequences) are skipped. */
export function sessionSpecs(session: ort.InferenceSession): { inputs: TensorSpec[]; outputs: TensorSpec[] } {
  const specs = (list: readonly ort.InferenceSession.ValueMetadata[]) =>
    list.flatMap((metadata) => specOf(metadata) ?? []);
  return { inputs: specs(session.inputMetadata), outputs: specs(session.outputMetadata) };
}

/**
 * What a client gets when onnxruntime refuses to run a model on its inputs (say, mismatched inner
 * dimensions): the request's fault, and the replica stays healthy.
 */
export function runRefusal(modelName: string, error: unknown): SwitchyardError {
  const reason = error instanceof Error ? error.message : String(error);
  return new SwitchyardError("bad_input", `model '${modelName}' could not run on these inputs: ${reason}`, {
    cause: error,
  });
}

export function toOrtTensor(tensor: Tensor): ort.Tensor {
  const type = ORT_TYPE[tensor.datatype];
  if (tensor.datatype === "BYTES") {
    const strings = (tensor.data as Uint8Array[]).map((element) => utf8Decoder.decode(element));
    return new ort.Tensor("string", strings, tensor.shape);
  }
  if (tensor.datatype === "FP16") return float16Tensor(tensor.data as Uint16Array, tensor.shape);
  return new ort.Tensor(type as "float32", tensor.data as Float32Array, tensor.shape);
}

/**
 * onnxruntime-common wraps float16 data in a Float16Array where the runtime has one (Node 24 does), but the
 * native binding cannot read a Float16Array (N-API has no such typed array) and sees zero bytes. Handing it
 * the raw 16-bit patterns, as it read them before Float16Array existed, works.
 */
function float16Tensor(bits: Uint16Array, shape: number[]): ort.Tensor {
  const tensor = new ort.Tensor("float16", bits, shape);
  Object.defineProperty(tensor, "cpuData", { value: bits, writable: true });
  return tensor;
}

export function fromOrtTensor(name: string, value: ort.Tensor): Tensor {
  const datatype = datatypeFromOrt(value.type);
  if (datatype === undefined) throw new Error(`output '${name}' has a type OIP cannot carry: ${value.type}`);
  const shape = [...value.dims];
  return { name, datatype, shape, data: ortDataAsOip(datatype, value.data) };
}

function ortDataAsOip(datatype: Datatype, data: ort.Tensor["data"]): TensorData {
  if (datatype === "BYTES") return (data as string[]).map((text) => utf8Encoder.encode(text));
  // Where the runtime has Float16Array, onnxruntime hands float16 out as one; OIP carries the raw bits.
  if (datatype === "FP16" && !(data instanceof Uint16Array)) {
    const view = data as ArrayBufferView;
    return new Uint16Array(view.buffer, view.byteOffset, view.byteLength / 2);
  }
  return data as TensorData;
}
