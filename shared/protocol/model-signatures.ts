import { z } from "zod";
import { tensorMetadataSchema } from "../oip/schemas.ts";

/**
 * Optional extension of the hello and state frames (protocol version 1): the inputs and outputs of the
 * models an agent has loaded, so the gateway can answer OIP model metadata without loading anything.
 * An agent that sends none still works; the gateway then answers metadata requests for a model only once
 * some agent has reported it. Signatures of a version never change, so each needs sending once per
 * connection (sending it again is harmless).
 *
 *   { "type": "state", "replicas": [...], "signatures": [ { "name": "det", "version": "1",
 *       "inputs": [ { "name": "x", "datatype": "FP32", "shape": [-1, 3, 224, 224] } ], "outputs": [...] } ] }
 */
export const ModelSignatureSchema = z.object({
  name: z.string().min(1).max(128),
  version: z.string().min(1).max(32),
  inputs: z.array(tensorMetadataSchema).max(1024),
  outputs: z.array(tensorMetadataSchema).max(1024),
});
export type ModelSignature = z.infer<typeof ModelSignatureSchema>;

/** The extension's field, as it may appear on hello and state frames. */
export const SignaturesFieldSchema = z.object({
  signatures: z.array(ModelSignatureSchema).max(1024).optional(),
});
