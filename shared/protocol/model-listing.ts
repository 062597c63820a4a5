import { z } from "zod";

/**
 * What the gateway's model store holds, as `GET /admin/models` lists it: written by gateway/models, read by
 * the `switchyard models` CLI. One schema, so the two cannot drift apart.
 */
export const MODEL_FILES = ["model.onnx", "config.json"] as const;
export type ModelFile = (typeof MODEL_FILES)[number];

export const StoredFileSchema = z.object({
  size: z.number().int().nonnegative(),
  sha256: z.string().optional(),
  /** ISO 8601 time of the upload. */
  uploaded: z.string(),
});
export type StoredFile = z.infer<typeof StoredFileSchema>;

export const StoredVersionSchema = z.object({
  name: z.string(),
  version: z.string(),
  files: z.partialRecord(z.enum(MODEL_FILES), StoredFileSchema),
});
export type StoredVersion = z.infer<typeof StoredVersionSchema>;

export const ModelListingSchema = z.object({ models: z.array(StoredVersionSchema) });
