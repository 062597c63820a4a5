import type { Tensor } from "../../shared/oip/tensor.ts";

/**
 * The config.json of a benchmark model's batched twin (Triton's keys): batches up to `maxBatchSize` rows,
 * dispatched at once at the preferred sizes, and a warm-up at the input's size so that every batch bucket is
 * planned at load rather than by the first batch of each size.
 */
export function batchedConfig(maxBatchSize: number, preferred: readonly number[], input: Tensor) {
  return {
    max_batch_size: maxBatchSize,
    dynamic_batching: { preferred_batch_size: [...preferred], max_queue_delay_microseconds: 0 },
    model_warmup: [
      {
        name: "image",
        batch_size: 1,
        inputs: {
          [input.name]: { data_type: "TYPE_FP32", dims: input.shape.slice(1), zero_data: true },
        },
      },
    ],
  };
}
