/**
 * Warm-up runs at load, from Triton's `model_warmup` in a model's config.json: each sample runs (`count`
 * times, at least once) before the model counts as loaded, so that no request pays what a session's first
 * runs cost. On CUDA that is cuDNN's plan of every convolution for the input's shape (0.9 to 2.2 s for
 * PP-OCRv4 detection); a plan lasts until the session sees another shape, so the last sample's shapes are
 * the ones that stay planned. A sample that cannot run fails the load, as in Triton: a bad sample is a bad
 * config, found at load rather than by the first client.
 *
 * Inputs are zeros (Triton's zero_data; random_data and input_data_file samples warm with zeros too: the
 * shapes, not the values, are what a warm-up is for) and empty strings for BYTES. A sample's `dims` for an
 * input are its whole shape when they have the input's rank (Triton's dims with max_batch_size 0), else its
 * shape after the batch, which is then the sample's batch_size (1 unless given). An input the sample leaves
 * out takes its shape from the graph when every dimension there is fixed (the batch's aside, which is then
 * the batch_size).
 */
import type { ModelConfig } from "../../shared/model-config.ts";
import { elementCount, type Tensor } from "../../shared/oip/tensor.ts";
import type { TensorSpec } from "./ort-tensors.ts";
import { ARRAY_CLASS } from "./session-protocol.ts";

type WarmupSample = NonNullable<ModelConfig["model_warmup"]>[number];

/** One declared sample: its name for errors, how many runs, and fresh feeds for each run. */
export interface WarmupRun {
  sample: string;
  count: number;
  /** New buffers on each call: a run may move its feeds to the session's thread. */
  feeds(): Tensor[];
}

/**
 * The runs config.json declares for a session that takes requests as they come (no batch buckets). Throws
 * when a sample does not say an input's shape and the graph does not fix it, or gives dims of a rank the
 * input cannot have.
 */
export function declaredWarmup(inputs: readonly TensorSpec[], config: ModelConfig): WarmupRun[] {
  return (config.model_warmup ?? []).map((sample, index) => {
    const name = sampleName(sample, index);
    const shapes = inputs.map((input) => {
      const shape = sampleShape(input, sample, sample.batch_size ?? 1);
      if (typeof shape === "string") throw new Error(`model_warmup sample '${name}': ${shape}`);
      return shape;
    });
    return { sample: name, count: Math.max(1, sample.count ?? 1), feeds: () => zerosOf(inputs, shapes) };
  });
}

/**
 * Zeros for one run of `bucket` rows, to warm a batch bucket's session at load: each input's dimensions
 * after the batch are its fixed ones, or those the first sample that names it gives. Undefined when a
 * dimension is known from neither: that bucket then plans on its first batch. Throws, as declaredWarmup,
 * when a sample gives an input dims of a rank it cannot have.
 */
export function bucketWarmupFeeds(
  inputs: readonly TensorSpec[],
  config: ModelConfig,
  bucket: number,
): Tensor[] | undefined {
  const samples = config.model_warmup ?? [];
  const shapes: number[][] = [];
  for (const input of inputs) {
    const index = samples.findIndex((each) => each.inputs[input.name] !== undefined);
    const sample = samples[index];
    const shape = sampleShape(input, sample, bucket);
    if (typeof shape === "string") {
      if (sample === undefined) return undefined;
      throw new Error(`model_warmup sample '${sampleName(sample, index)}': ${shape}`);
    }
    // A bucket's rows are the bucket's, whatever the sample's whole shape said.
    shapes.push([bucket, ...shape.slice(1)]);
  }
  return zerosOf(inputs, shapes);
}

/** How errors name a sample: its name, else its place in the list. */
const sampleName = (sample: WarmupSample, index: number) => sample.name ?? `#${index + 1}`;

/** The input's shape in a sample at `rows` rows, or why it has none. */
function sampleShape(input: TensorSpec, sample: WarmupSample | undefined, rows: number): number[] | string {
  const dims = sample?.inputs[input.name]?.dims;
  const rank = input.shape.length;
  if (dims === undefined) {
    if (input.shape.every((dim) => dim >= 0)) return [...input.shape];
    const after = input.shape.slice(1);
    if (rank > 0 && after.every((dim) => dim >= 0)) return [rows, ...after];
    return `no dims for input '${input.name}', whose shape [${input.shape.join(", ")}] has dynamic dimensions`;
  }
  if (dims.length === rank) return [...dims];
  if (dims.length === rank - 1) return [rows, ...dims];
  const fit =
    rank > 0
      ? `fit neither its rank ${rank} nor the ${rank - 1} dimensions after its batch`
      : "do not fit its rank 0";
  return `dims [${dims.join(", ")}] for input '${input.name}' ${fit}`;
}

function zerosOf(inputs: readonly TensorSpec[], shapes: readonly number[][]): Tensor[] {
  return inputs.map((input, index): Tensor => {
    const shape = shapes[index] ?? [];
    const count = elementCount(shape);
    const data =
      input.datatype === "BYTES"
        ? Array.from({ length: count }, () => new Uint8Array(0))
        : new ARRAY_CLASS[input.datatype](count);
    return { name: input.name, datatype: input.datatype, shape, data };
  });
}
