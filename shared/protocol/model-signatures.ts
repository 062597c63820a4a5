import { z } from "zod";
import { tensorMetadataSchema } from "../oip/schemas.ts";

/**
 * What the model's own config.json declares about batching, in Triton's keys: what Triton's model
 * configuration shows (`max_batch_size`, `dynamic_batching`). 0 and null when it declares nothing; the
 * agent's own defaults (`--max-batch-size`) are its business and change nothing a client must send.
 */
export const DeclaredBatchingSchema = z.object({
  max_batch_size: z.int().nonnegative(),
  dynamic_batching: z
    .object({
      preferred_batch_size: z.array(z.int().positive()).max(64),
      max_queue_delay_microseconds: z.int().nonnegative(),
    })
    .nullable(),
});
export type DeclaredBatching = z.infer<typeof DeclaredBatchingSchema>;

export const NO_DECLARED_BATCHING: DeclaredBatching = { max_batch_size: 0, dynamic_batching: null };

/** Whether the model batches along its first dimension, as Triton reads max_batch_size (above 0). */
export const batchesAlongFirstDim = (batching: Pick<DeclaredBatching, "max_batch_size">): boolean =>
  batching.max_batch_size > 0;

/**
 * A model version's inputs and outputs as OIP metadata, and its declared batching: what the gateway needs to
 * answer model metadata and configuration without loading anything. Agents send these in hello and state
 * frames (frames.ts), for the models of their own repository and the models they load.
 *
 *   { "name": "det", "version": "1",
 *     "inputs": [ { "name": "x", "datatype": "FP32", "shape": [-1, 3, -1, -1] } ], "outputs": [...],
 *     "batching": { "max_batch_size": 0, "dynamic_batching": null } }
 */
export const ModelSignatureSchema = z.object({
  name: z.string().min(1).max(128),
  version: z.string().min(1).max(32),
  inputs: z.array(tensorMetadataSchema).max(1024),
  outputs: z.array(tensorMetadataSchema).max(1024),
  batching: DeclaredBatchingSchema,
});
export type ModelSignature = z.infer<typeof ModelSignatureSchema>;
