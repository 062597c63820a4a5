/**
 * A model's optional config.json: metadata and limits that sit beside model.onnx. Unknown keys are kept
 * (users put their own metadata there and expect to see it again); known keys are checked strictly, since
 * a limit that silently fell back to a default would be worse than a model that refuses to load.
 */
import { z } from "zod";
import { SwitchyardError } from "./errors.ts";
import type { DeclaredBatching } from "./protocol/model-signatures.ts";

export const SHA256_HEX = /^[0-9a-fA-F]{64}$/;

/** The directory beside a model's versions (Triton's) that holds model_warmup's input_data_file files. */
export const WARMUP_DIR = "warmup";

/**
 * The files a config.json names beside the model, by kind: model_warmup's input_data_file ("warmup": in the
 * model's warmup/ directory, as Triton places them) and an output's label_filename ("labels": in the model's
 * directory). Each travels with the model: `switchyard models push` uploads it, an http repository (the
 * gateway's too) serves it below the version at `<kind>/<name>`, and the agent caches it there.
 */
export const REFERENCED_KINDS = ["warmup", "labels"] as const;
export type ReferencedKind = (typeof REFERENCED_KINDS)[number];

export interface ReferencedFile {
  kind: ReferencedKind;
  name: string;
}

/**
 * Whether a file name a config.json gives stays inside its directory: a relative path whose parts are neither
 * empty, "." nor "..". The one rule for every place the name becomes a path: a local file, a URL of an http
 * repository, an object key in the gateway's bucket.
 */
export function isReferencedFileName(name: string): boolean {
  // In UTF-8 bytes, within what file systems take per name (255) and R2 per key (1,024, with the prefix).
  const bytes = (text: string) => new TextEncoder().encode(text).byteLength;
  if (name.length === 0 || bytes(name) > 512 || /[\\\0]/.test(name)) return false;
  return name.split("/").every((part) => part !== "" && part !== "." && part !== ".." && bytes(part) <= 255);
}

/** Every file the config names, each once: the warm-up files in the order the samples name them, then labels. */
export function referencedFiles(config: ModelConfig): ReferencedFile[] {
  const warmup = new Set<string>();
  for (const sample of config.model_warmup ?? []) {
    for (const input of Object.values(sample.inputs)) {
      if (input.input_data_file !== undefined) warmup.add(input.input_data_file);
    }
  }
  const labels = new Set<string>();
  for (const output of config.output ?? []) {
    if (output.label_filename !== undefined) labels.add(output.label_filename);
  }
  return [
    ...[...warmup].map((name) => ({ kind: "warmup" as const, name })),
    ...[...labels].map((name) => ({ kind: "labels" as const, name })),
  ];
}

export const ModelConfigSchema = z
  .looseObject({
    description: z.string().optional(),
    /** Hex SHA-256 of model.onnx; when present the file is verified before it is loaded. */
    sha256: z
      .string()
      .regex(SHA256_HEX, "must be 64 hexadecimal digits")
      .transform((hex) => hex.toLowerCase())
      .optional(),
    /** Largest batch the model takes along its first dimension; 0 means the model does not batch. */
    max_batch_size: z.int().nonnegative().optional(),
    dynamic_batching: z
      .looseObject({
        max_queue_delay_microseconds: z.int().nonnegative().optional(),
        preferred_batch_size: z.array(z.int().positive()).optional(),
      })
      .optional(),
    /**
     * Samples the model runs at load, before it counts as loaded (Triton's key; backend/replica/model-warmup.ts
     * says how dims are read). They also give batch buckets the sizes of inputs the graph leaves dynamic.
     */
    model_warmup: z
      .array(
        z.looseObject({
          name: z.string().optional(),
          batch_size: z.int().positive().optional(),
          inputs: z.record(
            z.string(),
            z
              .looseObject({
                dims: z.array(z.int().positive()),
                /** What the input holds (Triton's three, at most one): zeros by default. */
                zero_data: z.boolean().optional(),
                random_data: z.boolean().optional(),
                /** Raw data for one batch row, read from warmup/<file> in the model's directory. */
                input_data_file: z
                  .string()
                  .refine(isReferencedFileName, "must be a path inside the model's warmup/ directory")
                  .optional(),
              })
              .refine(
                (input) =>
                  [
                    input.zero_data === true,
                    input.random_data === true,
                    input.input_data_file !== undefined,
                  ].filter(Boolean).length <= 1,
                "a warm-up input takes at most one of zero_data, random_data and input_data_file",
              ),
          ),
          /** Runs of this sample at load (Triton's key); 0 or absent: one. */
          count: z.int().nonnegative().optional(),
        }),
      )
      .optional(),
    /**
     * Triton's output entries; of their keys only label_filename is read (the others are the graph's to say):
     * a file in the model's directory, one class label per line, that classification results carry
     * (shared/oip/classification.ts).
     */
    output: z
      .array(
        z.looseObject({
          name: z.string(),
          // "" is Triton's "none" (its own config answers carry it).
          label_filename: z
            .string()
            .refine(
              (name) => name === "" || isReferencedFileName(name),
              "must be a path inside the model's directory",
            )
            .transform((name) => (name === "" ? undefined : name))
            .optional(),
        }),
      )
      .optional(),
    /** How many inferences may run on this model at once. */
    max_concurrency: z.int().positive().optional(),
    /**
     * Seconds a loaded copy may stay idle before its replica unloads it, for this model, whatever the agent's
     * --keep-alive says; 0 keeps it loaded until it is evicted for room (fal's keep_alive).
     */
    keep_alive_s: z.number().nonnegative().optional(),
    /**
     * The model's serving policy across a pool, read by the gateway (PUT /admin/models/{m}/policy overrides
     * them per pool): replicas that keep it loaded with no traffic (pinned), and replicas that may hold it at
     * once. Agents ignore them.
     */
    min_copies: z.int().nonnegative().optional(),
    max_copies: z.int().positive().optional(),
    /** Whether an inference may be retried on another host after a failure; true unless said otherwise. */
    idempotent: z.boolean().default(true),
    parameters: z.record(z.string(), z.unknown()).optional(),
  })
  .refine(
    (config) =>
      config.min_copies === undefined ||
      config.max_copies === undefined ||
      config.min_copies <= config.max_copies,
    { error: "min_copies must not exceed max_copies", path: ["min_copies"] },
  );

export type ModelConfig = z.infer<typeof ModelConfigSchema>;

/** The config of a model that has no config.json. */
export function defaultModelConfig(): ModelConfig {
  return ModelConfigSchema.parse({});
}

/**
 * Parses the text of a config.json. `where` names the file in errors (such as "det/2/config.json"); a
 * malformed file fails its model with `model_load_failed` and leaves the rest of the repository alone.
 */
export function parseModelConfig(text: string, where: string): ModelConfig {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (error) {
    throw new SwitchyardError("model_load_failed", `${where} is not valid JSON: ${messageOf(error)}`, {
      cause: error,
    });
  }
  const parsed = ModelConfigSchema.safeParse(json);
  if (!parsed.success) {
    throw new SwitchyardError("model_load_failed", `${where} is malformed: ${describeIssues(parsed.error)}`, {
      cause: parsed.error,
    });
  }
  return parsed.data;
}

/** A zod error on one line: "max_batch_size: expected number; dynamic_batching.preferred_batch_size.0: ...". */
export function describeIssues(error: z.ZodError): string {
  return error.issues.map((issue) => `${issue.path.join(".") || "(top level)"}: ${issue.message}`).join("; ");
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** What the config declares about batching, as Triton's model configuration shows it (0 / null: nothing). */
export function declaredBatching(config: ModelConfig): DeclaredBatching {
  const dynamic = config.dynamic_batching;
  return {
    max_batch_size: config.max_batch_size ?? 0,
    dynamic_batching:
      dynamic === undefined
        ? null
        : {
            preferred_batch_size: dynamic.preferred_batch_size ?? [],
            max_queue_delay_microseconds: dynamic.max_queue_delay_microseconds ?? 0,
          },
  };
}
