/**
 * Stacking requests' tensors along their first (batch) dimension, and splitting a batch's outputs back.
 * Works on OIP tensors, before they become onnxruntime tensors, so every datatype (FP16 bit patterns,
 * BYTES elements) stacks the same way: row-major data of tensors that agree on every dimension but the
 * first is simply concatenated.
 */
import type { TensorData } from "../../shared/oip/datatypes.ts";
import { elementCount, type Tensor } from "../../shared/oip/tensor.ts";
import { type BufferPool, requestBuffers } from "./buffer-pool.ts";

/**
 * The batch size a request brings: the first dimension all its inputs share. Undefined when they do not
 * share one (or an input is a scalar): such a request cannot be stacked with others.
 */
export function batchSizeOf(inputs: readonly Tensor[]): number | undefined {
  let size: number | undefined;
  for (const input of inputs) {
    const first = input.shape[0];
    if (first === undefined) return undefined;
    if (size !== undefined && first !== size) return undefined;
    size = first;
  }
  return size;
}

/**
 * Requests with the same key can share a batch: the same input names, datatypes and dimensions after the
 * first. Two images of different sizes get different keys and never meet in one tensor.
 */
export function stackingKey(inputs: readonly Tensor[]): string {
  return inputs
    .map((input) => `${input.name}:${input.datatype}:${input.shape.slice(1).join("x")}`)
    .sort()
    .join("|");
}

/**
 * One tensor per input name, holding every request's rows in request order, and with `padTo` grown to that
 * many rows by repeating the last one (batch buckets, batch-buckets.ts): one copy for both. Requests must
 * share a stacking key (checked by the caller when it grouped them). A lone request that needs no padding
 * is passed through as it is.
 */
export function stackInputs(
  requests: readonly (readonly Tensor[])[],
  padTo?: number,
  pool: BufferPool = requestBuffers,
): Tensor[] {
  const first = requests[0];
  if (first === undefined) return [];
  const rowsOf = (tensor: Tensor) => tensor.shape[0] ?? 0;
  if (requests.length === 1 && (padTo === undefined || first.every((tensor) => rowsOf(tensor) === padTo)))
    return [...first];
  return first.map((template) => {
    const parts = requests.map((inputs) => {
      const part = inputs.find((input) => input.name === template.name);
      if (part === undefined) throw new Error(`a request in the batch has no input '${template.name}'`);
      return part;
    });
    const rows = parts.reduce((sum, part) => sum + rowsOf(part), 0);
    const total = Math.max(rows, padTo ?? rows);
    const rowLength = elementCount(template.shape.slice(1));
    return {
      name: template.name,
      datatype: template.datatype,
      shape: [total, ...template.shape.slice(1)],
      data: concatData(
        parts.map((part) => part.data),
        rowLength,
        total - rows,
        pool,
      ),
    };
  });
}

/**
 * Each request's answer from one run's outputs (`results`, in the order of `names`): the outputs it wants, in
 * its order, and for a run of several requests only its rows (views, splitRows).
 */
export function answersOf(
  requests: readonly { size: number; wanted: readonly string[] }[],
  names: readonly string[],
  results: readonly Tensor[],
): Tensor[][] {
  const outputs = new Map(names.map((name, index) => [name, results[index] as Tensor]));
  if (requests.length === 1) return [requests[0]?.wanted.map((name) => outputs.get(name) as Tensor) ?? []];
  const sizes = requests.map((request) => request.size);
  const split = new Map([...outputs].map(([name, tensor]) => [name, splitRows(tensor, sizes)]));
  return requests.map((request, index) => request.wanted.map((name) => split.get(name)?.[index] as Tensor));
}

/**
 * The rows of `tensor` for each request, in order: `sizes[i]` rows for request i. Typed arrays are views
 * into the batch's output (no copy). Throws when the output's first dimension is not the batch's total,
 * which means the model does not keep its batch dimension on this output.
 */
export function splitRows(tensor: Tensor, sizes: readonly number[]): Tensor[] {
  const total = sizes.reduce((sum, size) => sum + size, 0);
  if (tensor.shape[0] !== total) {
    throw new Error(
      `output '${tensor.name}' has shape [${tensor.shape.join(", ")}], not ${total} rows: it cannot be split per request`,
    );
  }
  const rowLength = elementCount(tensor.shape.slice(1));
  const parts: Tensor[] = [];
  let row = 0;
  for (const size of sizes) {
    const start = row * rowLength;
    const end = (row + size) * rowLength;
    parts.push({
      name: tensor.name,
      datatype: tensor.datatype,
      shape: [size, ...tensor.shape.slice(1)],
      data: sliceData(tensor.data, start, end),
    });
    row += size;
  }
  return parts;
}

type TypedArray = Exclude<TensorData, Uint8Array[]>;
type TypedArrayConstructor = new (buffer: ArrayBuffer, byteOffset: number, length: number) => TypedArray;

/** The parts one after the other, then `padRows` copies of the last row (of `rowLength` elements). */
function concatData(
  parts: readonly TensorData[],
  rowLength: number,
  padRows: number,
  pool: BufferPool,
): TensorData {
  const first = parts[0];
  if (first === undefined) return new Float32Array(0);
  if (Array.isArray(first)) {
    const joined = (parts as Uint8Array[][]).flat();
    const last = joined.slice(joined.length - rowLength);
    for (let row = 0; row < padRows; row += 1) joined.push(...last);
    return joined;
  }
  const typed = parts as TypedArray[];
  const length = typed.reduce((sum, part) => sum + part.length, 0) + padRows * rowLength;
  // From the pool: the batch is reused once its run is over (buffer-pool.ts).
  const Constructor = first.constructor as TypedArrayConstructor;
  const joined = new Constructor(pool.acquire(length * first.BYTES_PER_ELEMENT), 0, length);
  let offset = 0;
  for (const part of typed) {
    // Same constructor for every part, so set() copies element by element of the same type.
    (joined as Float32Array).set(part as Float32Array, offset);
    offset += part.length;
  }
  const lastRow = (joined as Float32Array).subarray(offset - rowLength, offset);
  for (let row = 0; row < padRows; row += 1) {
    (joined as Float32Array).set(lastRow, offset);
    offset += rowLength;
  }
  return joined;
}

function sliceData(data: TensorData, start: number, end: number): TensorData {
  if (Array.isArray(data)) return data.slice(start, end);
  return (data as Float32Array).subarray(start, end);
}
