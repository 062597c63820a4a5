/**
 * Real ONNX models for demos, tests and benchmarks, built with onnx-proto (nothing can be downloaded from a
 * model hub): the protobuf framing, seeded weights and the MLP that `npm start`'s demo models are made of.
 * (scripts/lib/ holds the development tooling that `npm start`, the tests and the benchmarks share; it is not
 * part of the agent or the gateway, and test/ keeps only what tests alone use, such as the Identity and
 * multi-input models in test/fixtures/onnx-builder.ts, which are built from the blocks exported here.)
 *
 * Every model is produced as an EncodedModel: its exact size up front and its bytes as a stream of chunks.
 * Small models are simply concatenated; a 1 GB MLP can be written to disk chunk by chunk without ever holding
 * the whole file (or a JS array of its numbers) in memory. To make that possible the weights are framed by
 * hand: onnx-proto encodes every small message (model header, graph without initializers, tensor headers)
 * and this module appends the length-delimited fields whose payload is the raw weight bytes. The result is
 * one ordinary protobuf message (each field once), so onnx-proto, onnxruntime and Netron all read it.
 */

import type { onnx as Onnx } from "onnx-proto";
import onnxProto from "onnx-proto";
import { concat, fieldPrefix } from "../../shared/protobuf-framing.ts";

export const { onnx } = onnxProto;
export const DataType = onnx.TensorProto.DataType;

/** Opset 17 needs IR version 8, which is also the newest onnx-proto knows; onnxruntime 1.29 reads it. */
const IR_VERSION = 8;
const OPSET = 17;
const PRODUCER = "switchyard-fixtures";

// Field numbers from onnx.proto for the fields framed by hand (all length-delimited).
const MODEL_GRAPH_FIELD = 7;
const GRAPH_INITIALIZER_FIELD = 5;
const TENSOR_RAW_DATA_FIELD = 9;

/** A model's bytes, streamed: `chunks()` yields exactly `byteLength` bytes, and may be iterated again. */
export interface EncodedModel {
  byteLength: number;
  chunks(): Iterable<Uint8Array>;
}

/** An initializer whose raw little-endian bytes are produced only when the model is streamed. */
export interface LazyTensor {
  name: string;
  dataType: Onnx.TensorProto.DataType;
  dims: number[];
  byteLength: number;
  payload(): Iterable<Uint8Array>;
}

export function toBytes(model: EncodedModel): Uint8Array {
  const bytes = new Uint8Array(model.byteLength);
  let offset = 0;
  for (const chunk of model.chunks()) {
    bytes.set(chunk, offset);
    offset += chunk.byteLength;
  }
  if (offset !== model.byteLength)
    throw new Error(`model streamed ${offset} bytes, promised ${model.byteLength}`);
  return bytes;
}

// ---------------------------------------------------------------------------------------------------------
// Protobuf framing

/** Assembles ModelProto bytes: `header` and `graph` must not carry the graph or its initializers. */
export function encodeModel(
  header: Onnx.IModelProto,
  graph: Onnx.IGraphProto,
  initializers: LazyTensor[],
): EncodedModel {
  const tensors = initializers.map((tensor) => {
    const head = concat(
      onnx.TensorProto.encode({ name: tensor.name, dims: tensor.dims, dataType: tensor.dataType }).finish(),
      fieldPrefix(TENSOR_RAW_DATA_FIELD, tensor.byteLength),
    );
    const messageLength = head.byteLength + tensor.byteLength;
    return { tensor, head: concat(fieldPrefix(GRAPH_INITIALIZER_FIELD, messageLength), head) };
  });
  const graphHead = onnx.GraphProto.encode(graph).finish();
  const graphLength = tensors.reduce(
    (sum, { tensor, head }) => sum + head.byteLength + tensor.byteLength,
    graphHead.byteLength,
  );
  const modelHead = concat(
    onnx.ModelProto.encode(header).finish(),
    fieldPrefix(MODEL_GRAPH_FIELD, graphLength),
  );
  return {
    byteLength: modelHead.byteLength + graphLength,
    *chunks() {
      yield modelHead;
      yield graphHead;
      for (const { tensor, head } of tensors) {
        yield head;
        yield* tensor.payload();
      }
    },
  };
}

export function modelHeader(docString: string): Onnx.IModelProto {
  return {
    irVersion: IR_VERSION,
    opsetImport: [{ domain: "", version: OPSET }],
    producerName: PRODUCER,
    docString,
  };
}

/** A dimension: a fixed size, a named dynamic one ("batch"), or null for an anonymous dynamic one. */
export type Dim = number | string | null;

export function tensorValue(
  name: string,
  elemType: Onnx.TensorProto.DataType,
  dims: Dim[],
): Onnx.IValueInfoProto {
  const dim = dims.map((d) => (typeof d === "number" ? { dimValue: d } : d === null ? {} : { dimParam: d }));
  return { name, type: { tensorType: { elemType, shape: { dim } } } };
}

export function node(
  opType: string,
  input: string[],
  output: string[],
  attribute: Onnx.IAttributeProto[] = [],
): Onnx.INodeProto {
  return { name: `${opType}_${output.join("_")}`, opType, input, output, attribute };
}

export function intAttribute(name: string, value: number): Onnx.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INT, i: value };
}

export function bytesOf(values: Float32Array | BigInt64Array): Uint8Array {
  // Typed arrays are host-endian and ONNX raw_data is little-endian: every platform we run on is little-endian.
  return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
}

// ---------------------------------------------------------------------------------------------------------
// Deterministic weights

const CHUNK_ELEMENTS = 1 << 20;

/** mulberry32: tiny, fast and good enough to make weights that differ per seed and never per run. */
function mulberry32(state: number): () => number {
  let a = state >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** One independent random stream per (seed, tensor), so each tensor can be generated on its own, in chunks. */
function streamState(seed: number, stream: number): number {
  return Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(stream + 1, 0xc2b2ae35);
}

/** `count` values uniform in [-scale, scale), as Float32Array chunks of at most CHUNK_ELEMENTS. */
function* uniformChunks(seed: number, stream: number, count: number, scale: number): Generator<Float32Array> {
  const next = mulberry32(streamState(seed, stream));
  for (let start = 0; start < count; start += CHUNK_ELEMENTS) {
    const chunk = new Float32Array(Math.min(CHUNK_ELEMENTS, count - start));
    for (let i = 0; i < chunk.length; i++) chunk[i] = (next() * 2 - 1) * scale;
    yield chunk;
  }
}

/** A seeded random FP32 tensor; the same seed always gives the same values. */
export function seededFloats(seed: number, count: number, scale = 1): Float32Array {
  const values = new Float32Array(count);
  let offset = 0;
  for (const chunk of uniformChunks(seed, 0x5eed, count, scale)) {
    values.set(chunk, offset);
    offset += chunk.length;
  }
  return values;
}

// ---------------------------------------------------------------------------------------------------------
// MLP: y = Relu(x·W1 + b1)·W2 + b2

export interface MlpSpec {
  inputDim: number;
  hiddenDim: number;
  outputDim: number;
  seed: number;
  /** Graph name; defaults to "mlp". */
  name?: string;
}

export interface MlpWeights {
  inputDim: number;
  hiddenDim: number;
  outputDim: number;
  /** [inputDim, hiddenDim], row-major. */
  w1: Float32Array;
  b1: Float32Array;
  /** [hiddenDim, outputDim], row-major. */
  w2: Float32Array;
  b2: Float32Array;
}

export const MLP_INPUT = "x";
export const MLP_OUTPUT = "y";
export const BATCH_DIM = "batch";

interface MlpTensor {
  name: keyof Pick<MlpWeights, "w1" | "b1" | "w2" | "b2">;
  dims: number[];
  /** Scales keep every pre-activation around unit size, so outputs are well-conditioned at any width. */
  scale: number;
}

function mlpTensors({ inputDim, hiddenDim, outputDim }: MlpSpec): MlpTensor[] {
  return [
    { name: "w1", dims: [inputDim, hiddenDim], scale: 1 / Math.sqrt(inputDim) },
    { name: "b1", dims: [hiddenDim], scale: 0.1 },
    { name: "w2", dims: [hiddenDim, outputDim], scale: 1 / Math.sqrt(hiddenDim) },
    { name: "b2", dims: [outputDim], scale: 0.1 },
  ];
}

function elementCount(dims: number[]): number {
  return dims.reduce((count, dim) => count * dim, 1);
}

function assertMlpSpec(spec: MlpSpec): void {
  for (const key of ["inputDim", "hiddenDim", "outputDim", "seed"] as const) {
    if (!Number.isSafeInteger(spec[key]) || spec[key] < (key === "seed" ? 0 : 1)) {
      throw new RangeError(`MLP ${key} must be a ${key === "seed" ? "non-negative" : "positive"} integer`);
    }
  }
}

/** The MLP as a stream: nothing is generated until it is iterated, one 4 MB chunk at a time. */
export function encodeMlp(spec: MlpSpec): EncodedModel {
  assertMlpSpec(spec);
  const { inputDim, hiddenDim, outputDim, seed } = spec;
  const graph: Onnx.IGraphProto = {
    name: spec.name ?? "mlp",
    input: [tensorValue(MLP_INPUT, DataType.FLOAT, [BATCH_DIM, inputDim])],
    output: [tensorValue(MLP_OUTPUT, DataType.FLOAT, [BATCH_DIM, outputDim])],
    node: [
      node("MatMul", [MLP_INPUT, "w1"], ["xw1"]),
      node("Add", ["xw1", "b1"], ["pre"]),
      node("Relu", ["pre"], ["hidden"]),
      node("MatMul", ["hidden", "w2"], ["hw2"]),
      node("Add", ["hw2", "b2"], [MLP_OUTPUT]),
    ],
  };
  const initializers = mlpTensors(spec).map(
    ({ name, dims, scale }, stream): LazyTensor => ({
      name,
      dataType: DataType.FLOAT,
      dims,
      byteLength: elementCount(dims) * 4,
      *payload() {
        for (const chunk of uniformChunks(seed, stream, elementCount(dims), scale)) yield bytesOf(chunk);
      },
    }),
  );
  const doc = `MLP ${inputDim}x${hiddenDim}x${outputDim}, seed ${seed}`;
  return encodeModel(modelHeader(doc), graph, initializers);
}

/** The weights `encodeMlp(spec)` writes, for computing expected outputs in plain JS. */
export function mlpWeights(spec: MlpSpec): MlpWeights {
  assertMlpSpec(spec);
  const tensors = Object.fromEntries(
    mlpTensors(spec).map(({ name, dims, scale }, stream) => {
      const values = new Float32Array(elementCount(dims));
      let offset = 0;
      for (const chunk of uniformChunks(spec.seed, stream, values.length, scale)) {
        values.set(chunk, offset);
        offset += chunk.length;
      }
      return [name, values];
    }),
  ) as Pick<MlpWeights, "w1" | "b1" | "w2" | "b2">;
  return { inputDim: spec.inputDim, hiddenDim: spec.hiddenDim, outputDim: spec.outputDim, ...tensors };
}

/** An MLP held in memory with its weights. For files over ~100 MB stream `encodeMlp` to disk instead. */
export function buildMlp(spec: MlpSpec): { bytes: Uint8Array; weights: MlpWeights } {
  return { bytes: toBytes(encodeMlp(spec)), weights: mlpWeights(spec) };
}

/** The MLP computed in float64 in plain JS: `x` is [batch, inputDim] row-major, the result [batch, outputDim]. */
export function referenceMlp(weights: MlpWeights, x: Float32Array, batch: number): Float32Array {
  const { inputDim, hiddenDim, outputDim, w1, b1, w2, b2 } = weights;
  if (x.length !== batch * inputDim)
    throw new RangeError(`x has ${x.length} values, expected ${batch * inputDim}`);
  const y = new Float32Array(batch * outputDim);
  const hidden = new Float64Array(hiddenDim);
  for (let row = 0; row < batch; row++) {
    for (let j = 0; j < hiddenDim; j++) {
      let sum = b1[j] ?? 0;
      for (let i = 0; i < inputDim; i++) sum += (x[row * inputDim + i] ?? 0) * (w1[i * hiddenDim + j] ?? 0);
      hidden[j] = Math.max(0, sum);
    }
    for (let k = 0; k < outputDim; k++) {
      let sum = b2[k] ?? 0;
      for (let j = 0; j < hiddenDim; j++) sum += (hidden[j] ?? 0) * (w2[j * outputDim + k] ?? 0);
      y[row * outputDim + k] = sum;
    }
  }
  return y;
}

export interface MlpSizeOptions {
  targetBytes: number;
  inputDim?: number;
  outputDim?: number;
  seed: number;
  name?: string;
}

/**
 * The MLP spec whose file is closest to `targetBytes` (hiddenDim is the only free parameter; each hidden unit
 * costs (inputDim + outputDim + 1) * 4 bytes, 100 bytes by default, so 1 KB and up land within 5%).
 * Throws a RangeError when no hiddenDim gets within 5%.
 */
export function mlpForBytes({
  targetBytes,
  inputDim = 16,
  outputDim = 8,
  seed,
  name,
}: MlpSizeOptions): MlpSpec {
  const specFor = (hiddenDim: number): MlpSpec => ({
    inputDim,
    hiddenDim,
    outputDim,
    seed,
    ...(name === undefined ? {} : { name }),
  });
  const sizeOf = (hiddenDim: number) => encodeMlp(specFor(hiddenDim)).byteLength;
  // Size grows monotonically with hiddenDim: find the largest hiddenDim not above the target.
  let low = 1;
  let high = Math.max(1, Math.ceil(targetBytes / ((inputDim + outputDim + 1) * 4)));
  while (low < high) {
    const middle = Math.ceil((low + high) / 2);
    if (sizeOf(middle) <= targetBytes) low = middle;
    else high = middle - 1;
  }
  const best = [low, low + 1].reduce((a, b) =>
    Math.abs(sizeOf(b) - targetBytes) < Math.abs(sizeOf(a) - targetBytes) ? b : a,
  );
  const error = Math.abs(sizeOf(best) - targetBytes) / targetBytes;
  if (error > 0.05) {
    throw new RangeError(`no ${inputDim}x?x${outputDim} MLP is within 5% of ${targetBytes} bytes`);
  }
  return specFor(best);
}
