import type { TensorMetadata } from "../../../shared/oip/schemas.ts";
import { concat, lengthDelimited as field, varintField } from "../../../shared/protobuf-framing.ts";

/**
 * The bytes of an ONNX model with just a graph's inputs and outputs (no nodes, no weights): enough for the
 * gateway to read its signature at upload, which is all a Worker ever reads of a model. The workers tests
 * run inside workerd, where onnx-proto's code generation is not allowed, so the few fields are framed by hand.
 */
const ELEM_TYPE: Record<string, number> = {
  FP32: 1,
  UINT8: 2,
  INT8: 3,
  INT32: 6,
  INT64: 7,
  BYTES: 8,
  BOOL: 9,
  FP16: 10,
  FP64: 11,
};

export function tinyOnnx(inputs: readonly TensorMetadata[], outputs: readonly TensorMetadata[]): Uint8Array {
  const graph = [
    ...inputs.map((tensor) => field(11, valueInfo(tensor))),
    ...outputs.map((tensor) => field(12, valueInfo(tensor))),
  ];
  return concat(varintField(1, 8), field(7, concat(...graph)));
}

function valueInfo(tensor: TensorMetadata): Uint8Array {
  const dims = tensor.shape.map((size) => field(1, size < 0 ? field(2, text("n")) : varintField(1, size)));
  const tensorType = concat(varintField(1, ELEM_TYPE[tensor.datatype] ?? 1), field(2, concat(...dims)));
  return concat(field(1, text(tensor.name)), field(2, field(1, tensorType)));
}

const text = (value: string) => new TextEncoder().encode(value);
