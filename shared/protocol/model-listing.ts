import { z } from "zod";
import { isWarmupDataName, WARMUP_DIR } from "../model-config.ts";

/**
 * What the gateway's model store holds, as `GET /admin/models` lists it: written by gateway/models, read by
 * the `switchyard models` CLI. One schema, so the two cannot drift apart.
 *
 * A version's files: model.onnx, its config.json, and the model_warmup data files that config.json names,
 * each as `warmup/<input_data_file>` (the path an http repository serves it at, below the version).
 */
export const MODEL_FILES = ["model.onnx", "config.json"] as const;
export type WarmupFile = `${typeof WARMUP_DIR}/${string}`;
export type ModelFile = (typeof MODEL_FILES)[number] | WarmupFile;

/** A version's file for the input_data_file a sample names. */
export const warmupFileOf = (dataName: string): WarmupFile => `${WARMUP_DIR}/${dataName}`;

/** The input_data_file name of a warm-up file, or undefined when the file is not one. */
export function warmupDataNameOf(file: string): string | undefined {
  const prefix = `${WARMUP_DIR}/`;
  if (!file.startsWith(prefix)) return undefined;
  const name = file.slice(prefix.length);
  return isWarmupDataName(name) ? name : undefined;
}

export const isModelFile = (file: string): file is ModelFile =>
  (MODEL_FILES as readonly string[]).includes(file) || warmupDataNameOf(file) !== undefined;

export function contentTypeOf(file: ModelFile): string {
  return file === "config.json" ? "application/json" : "application/octet-stream";
}

/** The files a user may name, for messages. */
export const MODEL_FILES_HELP = `${MODEL_FILES.join(", ")} or ${WARMUP_DIR}/<input_data_file>`;

export const StoredFileSchema = z.object({
  size: z.number().int().nonnegative(),
  sha256: z.string().optional(),
  /** ISO 8601 time of the upload. */
  uploaded: z.string(),
});
export type StoredFile = z.infer<typeof StoredFileSchema>;

const ModelFileSchema = z.custom<ModelFile>((file) => typeof file === "string" && isModelFile(file));

export const StoredVersionSchema = z.object({
  name: z.string(),
  version: z.string(),
  files: z.partialRecord(ModelFileSchema, StoredFileSchema),
});
export type StoredVersion = z.infer<typeof StoredVersionSchema>;

export const ModelListingSchema = z.object({ models: z.array(StoredVersionSchema) });
