import type { Datatype, TensorData } from "./datatypes.ts";

/**
 * A decoded tensor, independent of how it travelled (JSON or binary) and of the runtime that will use it.
 * `data` holds exactly product(shape) elements in row-major order.
 */
export interface Tensor {
  name: string;
  datatype: Datatype;
  shape: number[];
  data: TensorData;
  /** OIP per-tensor parameters, passed through untouched. */
  parameters?: Record<string, unknown>;
}

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((count, dim) => count * dim, 1);
}
