import { z } from "zod";
import { tensorMetadataSchema } from "../oip/schemas.ts";

/**
 * A loaded model's inputs and outputs as OIP metadata, carried by hello and state frames (frames.ts).
 *
 *   { "name": "det", "version": "1",
 *     "inputs": [ { "name": "x", "datatype": "FP32", "shape": [-1, 3, -1, -1] } ], "outputs": [...] }
 */
export const ModelSignatureSchema = z.object({
  name: z.string().min(1).max(128),
  version: z.string().min(1).max(32),
  inputs: z.array(tensorMetadataSchema).max(1024),
  outputs: z.array(tensorMetadataSchema).max(1024),
});
export type ModelSignature = z.infer<typeof ModelSignatureSchema>;
