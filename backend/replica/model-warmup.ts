/**
 * Warm-up runs at load, from Triton's `model_warmup` in a model's config.json: each sample runs (`count`
 * times, at least once) before the model counts as loaded, so that no request pays what a session's first
 * runs cost. On CUDA that is cuDNN's plan of every convolution for the input's shape (0.9 to 2.2 s for
 * PP-OCRv4 detection); a plan lasts until the session sees another shape, so the last sample's shapes are
 * the ones that stay planned. A sample that cannot run fails the load, as in Triton: a bad sample is a bad
 * config, found at load rather than by the first client.
 *
 * What an input holds is Triton's choice of three: zeros (zero_data, the default; empty strings for BYTES),
 * random_data (drawn anew for each run: uniform in [0, 1) for floating types, 0 or 1 for integers and BOOL,
 * values that stay valid as indices and masks where Triton's random bytes would not; empty strings for
 * BYTES), or input_data_file: one batch row's raw bytes in the model's warmup/ directory, laid out as the
 * binary tensor extension lays out a tensor (BYTES: each element after its 4-byte little-endian length), the
 * same row repeated for every row of the run (where a sample's dims are the input's whole shape, the file
 * holds the whole tensor; a batch bucket repeats the file's first row). A fixed-size file longer than it
 * needs is read from its start, as Triton does; a shorter one, a BYTES file that does not hold exactly its
 * elements, or one not there, fails the load. An http repository (the gateway's too) serves the files below
 * each version (warmup/<file>), and the agent caches them beside its model.onnx.
 *
 * A sample's `dims` for an input are its whole shape when they have the input's rank (Triton's dims with
 * max_batch_size 0), else its shape after the batch, which is then the sample's batch_size (1 unless given).
 * An input the sample leaves out takes its shape from the graph when every dimension there is fixed (the
 * batch's aside, which is then the batch_size).
 */
import type { ModelConfig } from "../../shared/model-config.ts";
import { dataFromBinary } from "../../shared/oip/codec.ts";
import { ELEMENT_SIZE } from "../../shared/oip/datatypes.ts";
import { elementCount, type Tensor } from "../../shared/oip/tensor.ts";
import { type ReferencedDirs, readReferencedFile } from "../models/repository.ts";
import type { TensorSpec } from "./ort-tensors.ts";
import { ARRAY_CLASS } from "./session-protocol.ts";

type WarmupSample = NonNullable<ModelConfig["model_warmup"]>[number];
type SampleInput = WarmupSample["inputs"][string];

/** The input_data_file contents the samples name, by the name config.json gives (readWarmupFiles). */
export type WarmupFiles = ReadonlyMap<string, Uint8Array>;

/** One declared sample: its name for errors, how many runs, and fresh feeds for each run. */
export interface WarmupRun {
  sample: string;
  count: number;
  /** New buffers on each call: a run may move its feeds to the session's thread. */
  feeds(): Tensor[];
}

/**
 * Reads every input_data_file the samples name from the model's warmup/ directory (ResolvedModel.warmupDir),
 * before any run (an http repository has fetched them into its cache by then). Throws, naming the sample and
 * the input, for a file that is not there or cannot be read.
 */
export async function readWarmupFiles(config: ModelConfig, dirs: ReferencedDirs): Promise<WarmupFiles> {
  const files = new Map<string, Uint8Array>();
  for (const [index, sample] of (config.model_warmup ?? []).entries()) {
    for (const [input, given] of Object.entries(sample.inputs)) {
      const name = given.input_data_file;
      if (name === undefined || files.has(name)) continue;
      const bytes = await readReferencedFile(dirs, { kind: "warmup", name }).catch((error: unknown) => {
        const why = error instanceof Error ? error.message : String(error);
        throw new Error(
          `model_warmup sample '${sampleName(sample, index)}': input '${input}': input_data_file '${name}' ${why}`,
          { cause: error },
        );
      });
      files.set(name, bytes);
    }
  }
  return files;
}

/**
 * The runs config.json declares for a session that takes requests as they come (no batch buckets). Throws,
 * naming the sample, when it does not say an input's shape and the graph does not fix it, gives dims of a
 * rank the input cannot have, or names a data file too short for the input.
 */
export function declaredWarmup(
  inputs: readonly TensorSpec[],
  config: ModelConfig,
  files: WarmupFiles = new Map(),
): WarmupRun[] {
  return (config.model_warmup ?? []).map((sample, index) => {
    const name = sampleName(sample, index);
    const filled = inputs.map((input) => {
      const shape = sampleShape(input, sample, sample.batch_size ?? 1);
      if (typeof shape === "string") throw new Error(`model_warmup sample '${name}': ${shape}`);
      return filler(input, shape, sample.inputs[input.name], files, name);
    });
    return {
      sample: name,
      count: Math.max(1, sample.count ?? 1),
      feeds: () => filled.map((fill) => fill()),
    };
  });
}

/**
 * Feeds for one run of `bucket` rows, to warm a batch bucket's session at load: each input's dimensions
 * after the batch are its fixed ones, or those the first sample that names it gives, and it holds what that
 * sample says (zeros where none names it). Undefined when a dimension is known from neither: that bucket
 * then plans on its first batch. Throws, as declaredWarmup, for a sample that gives an input dims of a rank
 * it cannot have, or a data file too short for it.
 */
export function bucketWarmupFeeds(
  inputs: readonly TensorSpec[],
  config: ModelConfig,
  bucket: number,
  files: WarmupFiles = new Map(),
): Tensor[] | undefined {
  const samples = config.model_warmup ?? [];
  const feeds: Tensor[] = [];
  for (const input of inputs) {
    const index = samples.findIndex((each) => each.inputs[input.name] !== undefined);
    const sample = samples[index];
    const shape = sampleShape(input, sample, bucket);
    const name = sample === undefined ? "" : sampleName(sample, index);
    if (typeof shape === "string") {
      if (sample === undefined) return undefined;
      throw new Error(`model_warmup sample '${name}': ${shape}`);
    }
    // A bucket's rows are the bucket's, whatever the sample's whole shape said.
    const rows = { shape: [bucket, ...shape.shape.slice(1)], rows: bucket };
    feeds.push(filler(input, rows, sample?.inputs[input.name], files, name)());
  }
  return feeds;
}

/** How errors name a sample: its name, else its place in the list. */
const sampleName = (sample: WarmupSample, index: number) => sample.name ?? `#${index + 1}`;

/**
 * An input's shape in a run, and how many rows of it a data file's one row fills: the shape's first
 * dimension where the sample gave the shape after the batch, else 1 (its whole shape is one row).
 */
interface RunShape {
  shape: number[];
  rows: number;
}

/** The input's shape in a sample at `rows` rows, or why it has none. */
function sampleShape(input: TensorSpec, sample: WarmupSample | undefined, rows: number): RunShape | string {
  const dims = sample?.inputs[input.name]?.dims;
  const rank = input.shape.length;
  if (dims === undefined) {
    if (input.shape.every((dim) => dim >= 0)) return { shape: [...input.shape], rows: 1 };
    const after = input.shape.slice(1);
    if (rank > 0 && after.every((dim) => dim >= 0)) return { shape: [rows, ...after], rows };
    return `no dims for input '${input.name}', whose shape [${input.shape.join(", ")}] has dynamic dimensions`;
  }
  if (dims.length === rank) return { shape: [...dims], rows: 1 };
  if (dims.length === rank - 1) return { shape: [rows, ...dims], rows };
  const fit =
    rank > 0
      ? `fit neither its rank ${rank} nor the ${rank - 1} dimensions after its batch`
      : "do not fit its rank 0";
  return `dims [${dims.join(", ")}] for input '${input.name}' ${fit}`;
}

/**
 * What makes the input's tensor for each run, as its sample says: zeros, random values drawn anew each call,
 * or a data file's row (checked here, once) repeated `rows` times.
 */
function filler(
  input: TensorSpec,
  { shape, rows }: RunShape,
  given: SampleInput | undefined,
  files: WarmupFiles,
  sample: string,
): () => Tensor {
  const count = elementCount(shape);
  const tensor = (data: Tensor["data"]): Tensor => ({
    name: input.name,
    datatype: input.datatype,
    shape,
    data,
  });
  const file = given?.input_data_file;
  if (file !== undefined) {
    const row = fileRow(input, count / rows, files.get(file), file, sample);
    return () => tensor(repeated(input, row, rows));
  }
  if (given?.random_data === true) return () => tensor(randomData(input, count));
  return () => tensor(zeroData(input, count));
}

/** One row of the input from its data file's bytes, or an error naming the sample, the input and the file. */
function fileRow(
  input: TensorSpec,
  perRow: number,
  bytes: Uint8Array | undefined,
  file: string,
  sample: string,
): Tensor["data"] {
  const where = `model_warmup sample '${sample}': input '${input.name}': input_data_file '${file}'`;
  // readWarmupFiles read every file the config names, or failed the load first.
  if (bytes === undefined) throw new Error(`${where} was not read`);
  if (input.datatype === "BYTES") {
    try {
      return dataFromBinary("BYTES", bytes, perRow);
    } catch (error) {
      throw new Error(`${where}: ${error instanceof Error ? error.message : String(error)}`);
    }
  }
  const needed = perRow * ELEMENT_SIZE[input.datatype];
  if (bytes.byteLength < needed)
    throw new Error(
      `${where} holds ${bytes.byteLength} bytes, and one row of ${perRow} ${input.datatype} elements takes ${needed}`,
    );
  return dataFromBinary(input.datatype, bytes.subarray(0, needed), perRow);
}

/** `rows` copies of one row, in a new buffer (BYTES: a new list of the same elements). */
function repeated(input: TensorSpec, row: Tensor["data"], rows: number): Tensor["data"] {
  if (Array.isArray(row)) return Array.from({ length: rows }, () => row).flat();
  const data = zeroData(input, row.length * rows) as Exclude<Tensor["data"], Uint8Array[]>;
  const target = new Uint8Array(data.buffer);
  const source = new Uint8Array(row.buffer, row.byteOffset, row.byteLength);
  for (let at = 0; at < rows; at += 1) target.set(source, at * source.byteLength);
  return data;
}

function zeroData(input: TensorSpec, count: number): Tensor["data"] {
  return input.datatype === "BYTES"
    ? Array.from({ length: count }, () => new Uint8Array(0))
    : new ARRAY_CLASS[input.datatype](count);
}

/** Floating types uniform in [0, 1) (FP16 as its bit patterns), integers and BOOL 0 or 1, BYTES empty. */
function randomData(input: TensorSpec, count: number): Tensor["data"] {
  const data = zeroData(input, count);
  if (Array.isArray(data)) return data;
  const draw: () => number | bigint =
    input.datatype === "FP32" || input.datatype === "FP64"
      ? Math.random
      : input.datatype === "FP16"
        ? // Every pattern below 0x3c00 (1.0) is a finite half in [0, 1).
          () => Math.floor(Math.random() * 0x3c00)
        : input.datatype === "INT64" || input.datatype === "UINT64"
          ? () => BigInt(Math.random() < 0.5 ? 0 : 1)
          : () => (Math.random() < 0.5 ? 0 : 1);
  const writable = data as { [index: number]: number | bigint; length: number };
  for (let index = 0; index < count; index += 1) writable[index] = draw();
  return data;
}
