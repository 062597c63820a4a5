/**
 * OIP v2 tensor datatypes and how each is laid out in memory. The binary tensor extension sends every
 * fixed-size type as raw little-endian bytes; BYTES elements are each prefixed by a 4-byte little-endian
 * length. FP16 travels as its raw 16-bit patterns (a Uint16Array), which is also what onnxruntime takes.
 */
export const DATATYPES = [
  "BOOL",
  "UINT8",
  "UINT16",
  "UINT32",
  "UINT64",
  "INT8",
  "INT16",
  "INT32",
  "INT64",
  "FP16",
  "FP32",
  "FP64",
  "BYTES",
] as const;

export type Datatype = (typeof DATATYPES)[number];

/** The typed array that holds each fixed-size datatype; BYTES holds Uint8Array[] (one per element). */
export interface TypedArrayOf {
  BOOL: Uint8Array;
  UINT8: Uint8Array;
  UINT16: Uint16Array;
  UINT32: Uint32Array;
  UINT64: BigUint64Array;
  INT8: Int8Array;
  INT16: Int16Array;
  INT32: Int32Array;
  INT64: BigInt64Array;
  FP16: Uint16Array;
  FP32: Float32Array;
  FP64: Float64Array;
  BYTES: Uint8Array[];
}

export type TensorData = TypedArrayOf[Datatype];

/** Bytes per element of each fixed-size datatype (BYTES has none). */
export const ELEMENT_SIZE: Record<Exclude<Datatype, "BYTES">, number> = {
  BOOL: 1,
  UINT8: 1,
  UINT16: 2,
  UINT32: 4,
  UINT64: 8,
  INT8: 1,
  INT16: 2,
  INT32: 4,
  INT64: 8,
  FP16: 2,
  FP32: 4,
  FP64: 8,
};

/** onnxruntime's name for each datatype (Tensor.type), and back. */
export const ORT_TYPE: Record<Datatype, string> = {
  BOOL: "bool",
  UINT8: "uint8",
  UINT16: "uint16",
  UINT32: "uint32",
  UINT64: "uint64",
  INT8: "int8",
  INT16: "int16",
  INT32: "int32",
  INT64: "int64",
  FP16: "float16",
  FP32: "float32",
  FP64: "float64",
  BYTES: "string",
};

export function isDatatype(value: string): value is Datatype {
  return (DATATYPES as readonly string[]).includes(value);
}

export function datatypeFromOrt(ortType: string): Datatype | undefined {
  return DATATYPES.find((datatype) => ORT_TYPE[datatype] === ortType);
}
