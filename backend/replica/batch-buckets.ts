/**
 * Batches padded up to fixed sizes (BatchSettings.buckets), each size run by a session of its own. On CUDA,
 * onnxruntime rebuilds the cuDNN plan of every convolution whose input shape differs from that session's
 * previous run (0.9 to 2.2 s for PP-OCRv4 detection, and onnxruntime-node cannot pick a cheaper search), so
 * batches of changing sizes on one session re-plan all the time. A session per bucket sees one shape only
 * (for a given image size): warmed at load (model-warmup.ts), it never re-plans. Padding rows repeat the
 * batch's last row (a valid input, whatever the model does with zeros; stacked with the batch,
 * tensor-batch.ts), and are dropped from the outputs.
 */
import { elementCount, type Tensor } from "../../shared/oip/tensor.ts";
import type { FixedData } from "./session-protocol.ts";

/** The smallest bucket that holds `rows`; undefined when none does. */
export function bucketFor(rows: number, buckets: readonly number[]): number | undefined {
  return buckets.find((size) => size >= rows);
}

/**
 * Where a run of `rows` rows goes with these buckets (none: no buckets, or no rows to count): its bucket,
 * and the rows it is padded to, undefined when it fills the bucket as it is.
 */
export function bucketPlan(
  rows: number,
  buckets: readonly number[] | undefined,
): { bucket: number | undefined; padTo: number | undefined } {
  const bucket = buckets !== undefined && rows >= 1 ? bucketFor(rows, buckets) : undefined;
  return { bucket, padTo: bucket !== undefined && bucket !== rows ? bucket : undefined };
}

/** The first `rows` rows of each output of a padded run. */
export function dropPadding(outputs: readonly Tensor[], rows: number, bucket: number): Tensor[] {
  if (bucket === rows) return [...outputs];
  return outputs.map((output) => {
    const rowLength = elementCount(output.shape.slice(1));
    const shape = [rows, ...output.shape.slice(1)];
    const data = Array.isArray(output.data)
      ? output.data.slice(0, rows * rowLength)
      : (output.data as FixedData).subarray(0, rows * rowLength);
    return { ...output, shape, data } as Tensor;
  });
}
