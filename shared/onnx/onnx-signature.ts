/**
 * A model's inputs and outputs read straight from its ONNX file, as OIP metadata, without creating a
 * session or reading its weights: the gateway describes a model the moment it is uploaded, and an agent
 * describes its repository at start. The answer is the one onnxruntime gives for a loaded session
 * (backend/replica/ort-tensors.ts sessionSpecs): graph inputs that are initializers are not inputs,
 * symbolic or unknown dimensions are -1, and values OIP cannot carry (sequences, maps, bfloat16) are left out.
 * test/unit/onnx checks both agree on every fixture model.
 *
 *   ModelProto.graph (7) -> GraphProto: initializer (5), sparse_initializer (15), input (11), output (12)
 *   ValueInfoProto: name (1), type (2) -> TypeProto.tensor_type (1): elem_type (1), shape (2) -> dim (1)
 *   Dimension: dim_value (1) | dim_param (2)
 */
import type { Datatype } from "../oip/datatypes.ts";
import type { TensorMetadata } from "../oip/schemas.ts";
import { type ByteSource, type FieldHeader, fields, ProtobufError, readString } from "./protobuf-reader.ts";

export interface OnnxSignature {
  inputs: TensorMetadata[];
  outputs: TensorMetadata[];
}

export class OnnxFormatError extends Error {
  override name = "OnnxFormatError";
}

const MODEL_GRAPH = 7;
const GRAPH_INITIALIZER = 5;
const GRAPH_INPUT = 11;
const GRAPH_OUTPUT = 12;
const GRAPH_SPARSE_INITIALIZER = 15;
const TENSOR_NAME = 8;
const SPARSE_VALUES = 1;
const VALUE_NAME = 1;
const VALUE_TYPE = 2;
const TYPE_TENSOR = 1;
const TENSOR_TYPE_ELEM = 1;
const TENSOR_TYPE_SHAPE = 2;
const SHAPE_DIM = 1;
const DIM_VALUE = 1;

/** ONNX TensorProto.DataType -> OIP datatype; types OIP has no name for are absent. */
const ONNX_ELEM_TYPE: Readonly<Record<number, Datatype>> = {
  1: "FP32",
  2: "UINT8",
  3: "INT8",
  4: "UINT16",
  5: "INT16",
  6: "INT32",
  7: "INT64",
  8: "BYTES",
  9: "BOOL",
  10: "FP16",
  11: "FP64",
  12: "UINT32",
  13: "UINT64",
};

/** Reads the signature; throws OnnxFormatError when the bytes are not an ONNX model. */
export async function readOnnxSignature(source: ByteSource): Promise<OnnxSignature> {
  try {
    return await readSignature(source);
  } catch (error) {
    if (error instanceof ProtobufError) throw new OnnxFormatError(`not an ONNX model: ${error.message}`);
    throw error;
  }
}

async function readSignature(source: ByteSource): Promise<OnnxSignature> {
  let graph: FieldHeader | undefined;
  for await (const field of fields(source, 0, source.size)) {
    if (field.field === MODEL_GRAPH && field.length !== undefined) graph = field;
  }
  if (graph === undefined) throw new OnnxFormatError("not an ONNX model: it has no graph");
  const initializers = new Set<string>();
  const inputs: FieldHeader[] = [];
  const outputs: FieldHeader[] = [];
  for await (const field of fields(source, graph.start, graph.end)) {
    if (field.length === undefined) continue;
    if (field.field === GRAPH_INPUT) inputs.push(field);
    else if (field.field === GRAPH_OUTPUT) outputs.push(field);
    else if (field.field === GRAPH_INITIALIZER) initializers.add(await tensorName(source, field));
    else if (field.field === GRAPH_SPARSE_INITIALIZER) {
      for await (const part of fields(source, field.start, field.end)) {
        if (part.field === SPARSE_VALUES && part.length !== undefined)
          initializers.add(await tensorName(source, part));
      }
    }
  }
  const describe = async (list: FieldHeader[], skip: ReadonlySet<string>) => {
    const described: TensorMetadata[] = [];
    for (const field of list) {
      const value = await valueInfo(source, field);
      if (value !== undefined && !skip.has(value.name)) described.push(value);
    }
    return described;
  };
  return { inputs: await describe(inputs, initializers), outputs: await describe(outputs, new Set()) };
}

/** A TensorProto's name (field 8), found by stepping over its data fields without reading them. */
async function tensorName(source: ByteSource, tensor: FieldHeader): Promise<string> {
  for await (const field of fields(source, tensor.start, tensor.end)) {
    if (field.field === TENSOR_NAME && field.length !== undefined) return readString(source, field);
  }
  return "";
}

/** A ValueInfoProto as OIP metadata; undefined for what is not a tensor OIP can carry. */
async function valueInfo(source: ByteSource, value: FieldHeader): Promise<TensorMetadata | undefined> {
  let name = "";
  let tensorType: FieldHeader | undefined;
  for await (const field of fields(source, value.start, value.end)) {
    if (field.length === undefined) continue;
    if (field.field === VALUE_NAME) name = await readString(source, field);
    else if (field.field === VALUE_TYPE) {
      for await (const kind of fields(source, field.start, field.end)) {
        if (kind.field === TYPE_TENSOR && kind.length !== undefined) tensorType = kind;
      }
    }
  }
  if (tensorType === undefined) return undefined;
  let datatype: Datatype | undefined;
  let shape: number[] = [];
  for await (const field of fields(source, tensorType.start, tensorType.end)) {
    if (field.field === TENSOR_TYPE_ELEM && field.value !== undefined) datatype = ONNX_ELEM_TYPE[field.value];
    else if (field.field === TENSOR_TYPE_SHAPE && field.length !== undefined)
      shape = await dims(source, field);
  }
  return datatype === undefined ? undefined : { name, datatype, shape };
}

/** A TensorShapeProto's dimensions: a fixed size, or -1 for a symbolic or unknown one. */
async function dims(source: ByteSource, shape: FieldHeader): Promise<number[]> {
  const found: number[] = [];
  for await (const field of fields(source, shape.start, shape.end)) {
    if (field.field !== SHAPE_DIM || field.length === undefined) continue;
    let size = -1;
    for await (const part of fields(source, field.start, field.end)) {
      if (part.field === DIM_VALUE && part.value !== undefined && Number.isSafeInteger(part.value))
        size = part.value;
    }
    found.push(size);
  }
  return found;
}
