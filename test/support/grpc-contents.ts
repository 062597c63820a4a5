import type { Datatype } from "../../shared/oip/datatypes.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";

/** The repeated field of InferTensorContents a client fills for each datatype (FP16 has none: raw only). */
export const CONTENTS_FIELDS: Record<Exclude<Datatype, "FP16">, string> = {
  BOOL: "bool_contents",
  UINT8: "uint_contents",
  UINT16: "uint_contents",
  UINT32: "uint_contents",
  UINT64: "uint64_contents",
  INT8: "int_contents",
  INT16: "int_contents",
  INT32: "int_contents",
  INT64: "int64_contents",
  FP32: "fp32_contents",
  FP64: "fp64_contents",
  BYTES: "bytes_contents",
};

/**
 * A tensor's elements as a gRPC client puts them in InferTensorContents, written from the protocol's table
 * (not from the agent's): booleans, numbers, 64-bit integers as decimal strings (as protobuf libraries take
 * them), bytes as bytes.
 */
export function contentsOf(tensor: Tensor): Record<string, unknown[]> {
  if (tensor.datatype === "FP16") throw new Error("FP16 has no contents field");
  const { data } = tensor;
  const elements = Array.isArray(data)
    ? data.map((element) => Buffer.from(element))
    : tensor.datatype === "BOOL"
      ? Array.from(data as Uint8Array, (element) => element !== 0)
      : Array.from(data as ArrayLike<number | bigint>, (element) =>
          typeof element === "bigint" ? element.toString() : element,
        );
  return { [CONTENTS_FIELDS[tensor.datatype]]: elements };
}
