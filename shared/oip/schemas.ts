/**
 * The JSON documents of the Open Inference Protocol v2 REST API (KServe / Triton), as zod schemas.
 * Strict where the spec is (shapes, datatypes, the binary extension's parameters); tensor `data` stays
 * `unknown` here because checking it element by element is the codec's job (codec.ts), which knows the
 * datatype and reports the offending element.
 */
import { z } from "zod";
import { badInput } from "../errors.ts";
import { DATATYPES } from "./datatypes.ts";

/** A short, single-line rendering of a value for error messages. */
export function describeValue(value: unknown): string {
  if (value === undefined) return "nothing";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "bigint") return value.toString();
  if (typeof value === "object" && value !== null) return "an object";
  const text = JSON.stringify(value);
  return text.length > 40 ? `${text.slice(0, 37)}...` : text;
}

const nonNegativeIntegerError = (issue: { input?: unknown }) =>
  `expected a non-negative integer, got ${describeValue(issue.input)}`;
const dimensionError = (issue: { input?: unknown }) =>
  `expected an integer >= -1 (-1 for a dynamic dimension), got ${describeValue(issue.input)}`;

const nonNegativeInteger = z
  .int({ error: nonNegativeIntegerError })
  .nonnegative({ error: nonNegativeIntegerError });

export const shapeSchema = z.array(nonNegativeInteger, {
  error: (issue) => `expected an array of non-negative integers, got ${describeValue(issue.input)}`,
});

export const datatypeSchema = z.enum(DATATYPES, {
  error: (issue) =>
    `${issue.input === undefined ? "missing datatype" : `unknown datatype ${describeValue(issue.input)}`}; expected one of ${DATATYPES.join(", ")}`,
});

/** OIP `$parameters`: values are passed through untouched. */
export const parametersSchema = z.record(z.string(), z.unknown());

/** Per-tensor parameters, with the binary tensor extension's `binary_data_size` checked. */
const tensorParametersSchema = z.looseObject({ binary_data_size: nonNegativeInteger.optional() });

const dataSchema = z.unknown();

export const inferInputSchema = z.object({
  name: z.string(),
  shape: shapeSchema,
  datatype: datatypeSchema,
  parameters: tensorParametersSchema.optional(),
  data: dataSchema.optional(),
});
export type InferInputJson = z.infer<typeof inferInputSchema>;

const CLASS_COUNT = "must be a whole number of classes, 1 or more";

export const requestedOutputSchema = z.object({
  name: z.string(),
  parameters: z
    .looseObject({
      binary_data: z.boolean().optional(),
      /** Triton's classification extension: the output's top classes instead of its values (classification.ts). */
      classification: z.int(CLASS_COUNT).min(1, CLASS_COUNT).optional(),
    })
    .optional(),
});
export type RequestedOutputJson = z.infer<typeof requestedOutputSchema>;

/**
 * A request id is a correlation token, echoed in the response and its X-Request-Id header: one far longer
 * than any tracing id would make every hop carry it and common clients refuse the header.
 */
export const MAX_REQUEST_ID_LENGTH = 256;

export const inferRequestSchema = z.object({
  id: z
    .string()
    .max(MAX_REQUEST_ID_LENGTH, {
      error: (issue) =>
        `a request id is at most ${MAX_REQUEST_ID_LENGTH} characters, got ${(issue.input as string).length}`,
    })
    .optional(),
  parameters: z.looseObject({ binary_data_output: z.boolean().optional() }).optional(),
  inputs: z.array(inferInputSchema),
  outputs: z.array(requestedOutputSchema).optional(),
});
export type InferRequestJson = z.infer<typeof inferRequestSchema>;

export const inferOutputSchema = inferInputSchema;
export type InferOutputJson = z.infer<typeof inferOutputSchema>;

export const inferResponseSchema = z.object({
  model_name: z.string(),
  model_version: z.string().optional(),
  id: z.string().optional(),
  parameters: parametersSchema.optional(),
  outputs: z.array(inferOutputSchema),
});
export type InferResponseJson = z.infer<typeof inferResponseSchema>;

export const serverMetadataSchema = z.object({
  name: z.string(),
  version: z.string(),
  extensions: z.array(z.string()),
});
export type ServerMetadata = z.infer<typeof serverMetadataSchema>;

/** A model's declared input or output; -1 marks a dynamic dimension. */
export const tensorMetadataSchema = z.object({
  name: z.string(),
  datatype: datatypeSchema,
  shape: z.array(z.int({ error: dimensionError }).min(-1, { error: dimensionError })),
});
export type TensorMetadata = z.infer<typeof tensorMetadataSchema>;

export const modelMetadataSchema = z.object({
  name: z.string(),
  versions: z.array(z.string()).optional(),
  platform: z.string(),
  inputs: z.array(tensorMetadataSchema),
  outputs: z.array(tensorMetadataSchema),
});
export type ModelMetadata = z.infer<typeof modelMetadataSchema>;

export const repositoryIndexRequestSchema = z.object({ ready: z.boolean().optional() });
export type RepositoryIndexRequest = z.infer<typeof repositoryIndexRequestSchema>;

export const repositoryIndexEntrySchema = z.object({
  name: z.string(),
  version: z.string().optional(),
  state: z.string().optional(),
  reason: z.string().optional(),
});
export type RepositoryIndexEntry = z.infer<typeof repositoryIndexEntrySchema>;

export const repositoryIndexResponseSchema = z.array(repositoryIndexEntrySchema);
export type RepositoryIndexResponse = z.infer<typeof repositoryIndexResponseSchema>;

/** `{"error": "..."}`; the type is ErrorBody in errors.ts. */
export const errorBodySchema = z.object({ error: z.string() });

/** `inputs[1].shape[0]` from zod's `["inputs", 1, "shape", 0]`. */
export function formatPath(path: readonly PropertyKey[]): string {
  let text = "";
  for (const key of path) {
    if (typeof key === "number") text += `[${key}]`;
    else text += text === "" ? String(key) : `.${String(key)}`;
  }
  return text;
}

const MAX_REPORTED_ISSUES = 3;

/**
 * Parses `value` with `schema`, or throws a bad_input SwitchyardError naming each offending field, e.g.
 * `inputs[1].shape[0]: expected a non-negative integer, got -3`. `what` names the document for
 * problems at its root ("request body: expected object, received array").
 */
export function parseOrBadInput<T extends z.ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issues = result.error.issues;
  const described = issues
    .slice(0, MAX_REPORTED_ISSUES)
    .map((issue) => `${formatPath(issue.path) || what}: ${issue.message}`);
  if (issues.length > MAX_REPORTED_ISSUES) described.push(`and ${issues.length - MAX_REPORTED_ISSUES} more`);
  throw badInput(described.join("; "));
}
