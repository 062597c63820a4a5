/**
 * Whether, and how, a model's requests are stacked into batches. The model's config.json decides where it
 * says something (Triton's keys: `max_batch_size`, `dynamic_batching`); the agent's flags give the
 * defaults; the session's own input and output specs decide whether stacking is possible at all.
 */
import type { ModelConfig } from "../../shared/model-config.ts";
import { replansPerShape } from "./onnx-op-types.ts";
import type { TensorSpec } from "./ort-tensors.ts";

/**
 * `--batch-buckets`: whether batches are padded to fixed sizes; auto is on with CUDA for a model whose
 * convolutions re-plan when the batch size changes (onnx-op-types.ts), and off for the rest, where a bucket
 * buys nothing and costs a session (and a hop between threads for each of its lanes' batches).
 */
export type BucketMode = "auto" | "on" | "off";

/** The agent-wide defaults (`--max-batch-size`, `--max-queue-delay-us`, `--batch-buckets`). */
export interface BatchingDefaults {
  /** Largest batch along the first dimension; 1 or less turns batching off for models that say nothing. */
  maxBatchSize: number;
  /** How long a request may wait for others to join its batch. */
  maxQueueDelayMicroseconds: number;
  /** Omitted: auto. */
  buckets?: BucketMode | undefined;
}

/** What a replica's batcher needs for one model. */
export interface BatchSettings {
  maxBatchSize: number;
  maxQueueDelayMs: number;
  /** Batch sizes that are dispatched as soon as they can be formed, without waiting out the delay. */
  preferredBatchSizes: number[];
  /**
   * The sizes every run is padded up to, ascending, each run by a session of its own (batch-buckets.ts);
   * undefined: runs take the rows they have, on the one session.
   */
  buckets?: number[] | undefined;
}

/**
 * Off unless a model's config.json (or --max-batch-size) asks for it, measured on an H100
 * (bench/results/gpu.md): batching multiplies the throughput of models whose runs are mostly overhead (a
 * small MLP: 11x in process at 32 clients), but on CUDA a convolutional model pays a cuDNN plan rebuild
 * (0.9 to 2.2 s for PP-OCRv4 detection) every time a batch's size differs from the previous one, because
 * onnxruntime 1.29 rebuilds the plan of each Conv whose input shape changed and onnxruntime-node cannot
 * select the cheaper cuDNN search. No waiting by default: a request that finds its model idle runs at
 * once, and those that arrive while a batch runs form the next one (a 2 ms delay lowered throughput and
 * added 2 ms at one client). Batch buckets avoid the rebuilds but are sessions of their own, each warmed at
 * load: PP-OCRv4 with four loads ~20x slower and takes ~35x the GPU memory (bench/results/bucket-load-cuda.md).
 */
export const DEFAULT_BATCHING = {
  maxBatchSize: 1,
  maxQueueDelayMicroseconds: 0,
  buckets: "auto",
} as const satisfies BatchingDefaults;

/**
 * The model's batch settings, or undefined when its requests run one by one: batching is off for it
 * (max_batch_size 0 or 1, or the default is off), or its specs do not allow stacking. Stacking needs every
 * input and output to have a dynamic first dimension (-1), so each request's rows can be told apart in the
 * outputs. Without an explicit max_batch_size, rank-1 tensors are not stacked either: a lone dynamic
 * dimension is as often a sequence (tokens) as a batch, and concatenating sequences would silently change
 * the answer.
 */
export function batchSettingsFor(
  config: ModelConfig,
  specs: { inputs: readonly TensorSpec[]; outputs: readonly TensorSpec[] },
  defaults: BatchingDefaults,
  /** Where the model runs, and the operator types its graph uses (undefined: not known). */
  target: { device: "cpu" | "cuda"; opTypes?: ReadonlySet<string> | undefined } = { device: "cpu" },
): BatchSettings | undefined {
  const declared = config.max_batch_size;
  const maxBatchSize = declared ?? defaults.maxBatchSize;
  if (maxBatchSize <= 1 || specs.inputs.length === 0) return undefined;
  const minimumRank = declared === undefined ? 2 : 1;
  const stackable = (spec: TensorSpec) => spec.shape[0] === -1 && spec.shape.length >= minimumRank;
  if (!specs.inputs.every(stackable) || !specs.outputs.every(stackable)) return undefined;
  const dynamic = config.dynamic_batching;
  const delayMicroseconds = dynamic?.max_queue_delay_microseconds ?? defaults.maxQueueDelayMicroseconds;
  const preferred = [...new Set(dynamic?.preferred_batch_size ?? [])]
    .filter((size) => size <= maxBatchSize)
    .sort((a, b) => a - b);
  const mode = defaults.buckets ?? "auto";
  // A model whose operators are not known is taken to re-plan: buckets cost memory, re-plans seconds.
  const replans = target.opTypes === undefined || replansPerShape(target.opTypes);
  const bucketed = mode === "on" || (mode === "auto" && target.device === "cuda" && replans);
  return {
    maxBatchSize,
    maxQueueDelayMs: delayMicroseconds / 1000,
    preferredBatchSizes: preferred,
    ...(bucketed ? { buckets: bucketSizes(maxBatchSize, preferred) } : {}),
  };
}

/**
 * The sizes batches are padded up to: the preferred sizes, else the powers of two, and always 1 (a request
 * alone is never padded: one client sees no difference) and the max batch size.
 */
export function bucketSizes(maxBatchSize: number, preferred: readonly number[]): number[] {
  const sizes = new Set([1, maxBatchSize, ...preferred.filter((size) => size <= maxBatchSize)]);
  if (preferred.length === 0) for (let size = 2; size < maxBatchSize; size *= 2) sizes.add(size);
  return [...sizes].sort((a, b) => a - b);
}
