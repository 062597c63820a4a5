/**
 * Triton's classification extension: a requested output with `"parameters": {"classification": <count>}`
 * comes back as its top <count> classes instead of its values, a BYTES tensor of "<value>:<index>" strings
 * ordered from the highest value down (ties: the lower index first), "<value>:<index>:<label>" where the
 * model's config.json gives the output a label file and it has a line for that index. What tritonclient's
 * `InferRequestedOutput(name, class_count=k)` asks for and its image_client example reads.
 *
 * As Triton does it: where the model batches (its max_batch_size above 0, as GET .../config reports) and the
 * output has a first dimension, each row along it is classified apart and the answer's shape is
 * [rows, min(count, row elements)]; otherwise the whole tensor is one row and the shape is
 * [min(count, elements)]. Values are written as C's std::to_string writes them ("%f" for floats: 3.300000;
 * integers in full), so strings compare equal with Triton's. Unlike Triton, FP16 outputs can be classified
 * too; BOOL and BYTES cannot (400, in Triton's words).
 */
import { badInput } from "../errors.ts";
import { halfBitsToFloat } from "./fp16.ts";
import type { Tensor } from "./tensor.ts";

/** Each labelled output's labels, by output name: line i of its label file labels class i. */
export type OutputLabels = ReadonlyMap<string, readonly string[]>;

/** What classifying a model's outputs takes, known once its model is loaded. */
export interface OutputClasses {
  /** config.json's max_batch_size is above 0 (as GET .../config reports): outputs are classified per row. */
  batched: boolean;
  labels: OutputLabels;
}

const NO_LABELS: OutputLabels = new Map();

/** The same classes without their labels: what a request that asks for no classes needs of them. */
export function unlabelled(classes: OutputClasses): OutputClasses {
  return classes.labels.size === 0 ? classes : { batched: classes.batched, labels: NO_LABELS };
}

/** Whether a request asks classes of any output (then its outcome needs the model's labels). */
export function asksClasses(request: {
  outputs?: readonly { name: string; classification?: number }[];
}): boolean {
  return request.outputs?.some((output) => output.classification !== undefined) === true;
}

/**
 * The outputs a served request answers with: those it asked classes of (RequestedOutput.classification)
 * replaced by them, the others as they ran. `classes` is the model's (InferOutcome's).
 */
export function answeredOutputs(
  served: { outputs: Tensor[]; classes: OutputClasses },
  request: { outputs?: readonly { name: string; classification?: number }[] },
): Tensor[] {
  const counts = new Map<string, number>();
  for (const output of request.outputs ?? []) {
    if (output.classification !== undefined) counts.set(output.name, output.classification);
  }
  if (counts.size === 0) return served.outputs;
  const { batched, labels } = served.classes;
  return served.outputs.map((tensor) => {
    const count = counts.get(tensor.name);
    if (count === undefined) return tensor;
    // As Triton reads it: a first dimension of 0 is no batch (the whole, empty tensor is one row).
    const perRow = batched && (tensor.shape[0] ?? 0) > 0;
    return classify(tensor, count, perRow, labels.get(tensor.name));
  });
}

/** One output's top `count` classes, per row along its first dimension when `perRow`, labelled from `labels`. */
export function classify(tensor: Tensor, count: number, perRow: boolean, labels?: readonly string[]): Tensor {
  const read = reader(tensor);
  const total = tensor.shape.reduce((product, dim) => product * dim, 1);
  const rows = perRow ? (tensor.shape[0] ?? 1) : 1;
  const rowLength = rows === 0 ? 0 : total / rows;
  const kept = Math.min(count, rowLength);
  const encoder = new TextEncoder();
  const data: Uint8Array[] = [];
  for (let row = 0; row < rows; row += 1) {
    const offset = row * rowLength;
    for (const index of topIndices(read, offset, rowLength, kept)) {
      // An empty line labels nothing, as in Triton.
      const label = labels?.[index] ?? "";
      const text = `${read.format(offset + index)}:${index}`;
      data.push(encoder.encode(label === "" ? text : `${text}:${label}`));
    }
  }
  const shape = perRow ? [rows, kept] : [kept];
  return {
    name: tensor.name,
    datatype: "BYTES",
    shape,
    data,
    ...(tensor.parameters === undefined ? {} : { parameters: tensor.parameters }),
  };
}

interface Reader {
  /** a before b: a's value is higher, or the same (NaN counts lowest) at a lower index. */
  before(a: number, b: number): boolean;
  format(at: number): string;
}

function reader(tensor: Tensor): Reader {
  const data = tensor.data;
  switch (tensor.datatype) {
    case "FP32":
    case "FP64": {
      const values = data as Float32Array | Float64Array;
      // A NaN's sign is read from its bits (glibc writes "-nan" for one with the sign bit set, as x86's own
      // NaNs have); the host's byte order is little-endian, as everywhere the codec runs.
      const bytes = new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
      const size = values.BYTES_PER_ELEMENT;
      return numberReader(
        (at) => values[at] ?? Number.NaN,
        (value, at) => formatFloat(value, ((bytes[at * size + size - 1] ?? 0) & 0x80) !== 0),
      );
    }
    case "FP16": {
      const bits = data as Uint16Array;
      return numberReader(
        (at) => halfBitsToFloat(bits[at] ?? 0),
        (value, at) => formatFloat(value, ((bits[at] ?? 0) & 0x8000) !== 0),
      );
    }
    case "INT8":
    case "INT16":
    case "INT32":
    case "UINT8":
    case "UINT16":
    case "UINT32":
      return numberReader(
        (at) => (data as Int32Array)[at] ?? 0,
        (value) => String(value),
      );
    case "INT64":
    case "UINT64": {
      const values = data as BigInt64Array | BigUint64Array;
      const at = (index: number) => values[index] ?? 0n;
      return {
        before: (a, b) => at(a) > at(b) || (at(a) === at(b) && a < b),
        format: (index) => at(index).toString(),
      };
    }
    default:
      throw badInput(
        `class result not available for output '${tensor.name}' due to unsupported type '${tensor.datatype}'`,
      );
  }
}

function numberReader(at: (index: number) => number, format: (value: number, at: number) => string): Reader {
  return {
    before(a, b) {
      const x = at(a);
      const y = at(b);
      if (Number.isNaN(x) || Number.isNaN(y))
        return Number.isNaN(x) === Number.isNaN(y) ? a < b : !Number.isNaN(x);
      return x > y || (x === y && a < b);
    },
    format: (index) => format(at(index), index),
  };
}

/**
 * C's "%f", as std::to_string writes a float or a double: six decimals, rounded half to even from the
 * double's exact binary value (JavaScript's toFixed rounds such ties up: 0.0078125 is 0.007812 here, as in
 * C), whole numbers in full however large, "-0.000000" kept; a NaN is "nan", or "-nan" with its sign bit set.
 */
export function formatFloat(value: number, negativeNaN = false): string {
  if (Number.isNaN(value)) return negativeNaN ? "-nan" : "nan";
  if (!Number.isFinite(value)) return value > 0 ? "inf" : "-inf";
  const negative = value < 0 || Object.is(value, -0);
  const { mantissa, exponent } = exactBinary(Math.abs(value));
  let micros: bigint;
  if (exponent >= 0) micros = (mantissa << BigInt(exponent)) * MILLION;
  else {
    const shift = BigInt(-exponent);
    const scaled = mantissa * MILLION;
    micros = scaled >> shift;
    const twiceRemainder = (scaled - (micros << shift)) << 1n;
    const half = 1n << shift;
    if (twiceRemainder > half || (twiceRemainder === half && (micros & 1n) === 1n)) micros += 1n;
  }
  const digits = micros.toString().padStart(7, "0");
  return `${negative ? "-" : ""}${digits.slice(0, -6)}.${digits.slice(-6)}`;
}

const MILLION = 1_000_000n;

/** A finite non-negative double as mantissa * 2^exponent, exactly. */
function exactBinary(value: number): { mantissa: bigint; exponent: number } {
  const view = new DataView(new ArrayBuffer(8));
  view.setFloat64(0, value);
  const bits = view.getBigUint64(0);
  const biased = Number((bits >> 52n) & 0x7ffn);
  const fraction = bits & ((1n << 52n) - 1n);
  // Subnormals have no implicit leading 1.
  return biased === 0
    ? { mantissa: fraction, exponent: -1074 }
    : { mantissa: fraction | (1n << 52n), exponent: biased - 1075 };
}

/**
 * The indices (from `offset`) of the `kept` best of `length` elements, best first: a heap of `kept` holds the
 * best so far, so a large output costs n log k, not a sort of every element.
 */
function topIndices(read: Reader, offset: number, length: number, kept: number): number[] {
  if (kept === 0) return [];
  const before = (a: number, b: number) => read.before(offset + a, offset + b);
  // A min-heap by `before`: its root is the worst of the best so far.
  const heap: number[] = [];
  const worse = (a: number, b: number) => before(b, a);
  const siftUp = (start: number) => {
    let child = start;
    while (child > 0) {
      const parent = (child - 1) >> 1;
      if (!worse(heap[child] as number, heap[parent] as number)) break;
      [heap[child], heap[parent]] = [heap[parent] as number, heap[child] as number];
      child = parent;
    }
  };
  const siftDown = () => {
    let parent = 0;
    for (;;) {
      const left = 2 * parent + 1;
      const right = left + 1;
      let worst = parent;
      if (left < heap.length && worse(heap[left] as number, heap[worst] as number)) worst = left;
      if (right < heap.length && worse(heap[right] as number, heap[worst] as number)) worst = right;
      if (worst === parent) return;
      [heap[worst], heap[parent]] = [heap[parent] as number, heap[worst] as number];
      parent = worst;
    }
  };
  for (let index = 0; index < length; index += 1) {
    if (heap.length < kept) {
      heap.push(index);
      siftUp(heap.length - 1);
    } else if (before(index, heap[0] as number)) {
      heap[0] = index;
      siftDown();
    }
  }
  return heap.sort((a, b) => (before(a, b) ? -1 : 1));
}
