import { z } from "zod";
import { isReferencedFileName, REFERENCED_KINDS, type ReferencedFile } from "../model-config.ts";

/**
 * What the gateway's model store holds, as `GET /admin/models` lists it: written by gateway/models, read by
 * the `switchyard models` CLI. One schema, so the two cannot drift apart.
 *
 * A version's files: model.onnx, its config.json, and the files that config.json names (ReferencedFile), each
 * as `<kind>/<name>`: `warmup/<input_data_file>`, `labels/<label_filename>` (the path an http repository
 * serves it at, below the version).
 */
export const MODEL_FILES = ["model.onnx", "config.json"] as const;
export type ReferencedModelFile = `${ReferencedFile["kind"]}/${string}`;
export type ModelFile = (typeof MODEL_FILES)[number] | ReferencedModelFile;

/** The version's file that holds a file its config.json names. */
export const referencedModelFile = (file: ReferencedFile): ReferencedModelFile => `${file.kind}/${file.name}`;

/** The referenced file a version's file holds, or undefined when it holds none. */
export function referencedFileIn(file: string): ReferencedFile | undefined {
  const slash = file.indexOf("/");
  if (slash < 0) return undefined;
  const kind = REFERENCED_KINDS.find((candidate) => candidate === file.slice(0, slash));
  const name = file.slice(slash + 1);
  return kind !== undefined && isReferencedFileName(name) ? { kind, name } : undefined;
}

export const isModelFile = (file: string): file is ModelFile =>
  (MODEL_FILES as readonly string[]).includes(file) || referencedFileIn(file) !== undefined;

export function contentTypeOf(file: ModelFile): string {
  if (file === "config.json") return "application/json";
  return referencedFileIn(file)?.kind === "labels" ? "text/plain; charset=utf-8" : "application/octet-stream";
}

/** The files a user may name, for messages. */
export const MODEL_FILES_HELP = `${MODEL_FILES.join(", ")}, warmup/<input_data_file> or labels/<label_filename>`;

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
  // Any name: a CLI still reads the listing of a gateway that keeps kinds of files it does not know yet.
  files: z.record(z.string(), StoredFileSchema),
});
export type StoredVersion = z.infer<typeof StoredVersionSchema>;

export const ModelListingSchema = z.object({ models: z.array(StoredVersionSchema) });
