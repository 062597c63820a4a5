import { z } from "zod";
import { type ModelConfig, parseModelConfig } from "../../shared/model-config.ts";
import {
  compareModelEntries,
  compareModelVersions,
  isModelName,
  isModelVersion,
} from "../../shared/model-names.ts";
import { tensorMetadataSchema } from "../../shared/oip/schemas.ts";
import { type OnnxSignature, readOnnxSignature } from "../../shared/onnx/onnx-signature.ts";
import { memorySource } from "../../shared/onnx/protobuf-reader.ts";
import {
  contentTypeOf,
  isModelFile,
  MODEL_FILES_HELP,
  type ModelFile,
  type StoredFile,
  type StoredVersion,
} from "../../shared/protocol/model-listing.ts";

/**
 * The gateway's model repository in R2: `models/<name>/<version>/model.onnx` and, optionally,
 * `models/<name>/<version>/config.json` and the files it names, `models/<name>/<version>/warmup/<input_data_file>`
 * and `models/<name>/<version>/labels/<label_filename>`. Each object carries its SHA-256 twice: as R2's own
 * checksum (R2 verifies the upload against it) and as custom metadata (which listings return, so
 * repository.json needs no reads of the files themselves). Beside them the gateway keeps `signature.json`,
 * the model's inputs and outputs read from its graph when it was uploaded, so metadata needs no agent.
 */
export { isModelFile, MODEL_FILES_HELP, type ModelFile, type StoredFile, type StoredVersion };

const PREFIX = "models/";
const versionPrefix = (name: string, version: string) => `${PREFIX}${name}/${version}/`;
const objectKey = (name: string, version: string, file: ModelFile) =>
  `${versionPrefix(name, version)}${file}`;

export async function putModelFile(
  bucket: R2Bucket,
  name: string,
  version: string,
  file: ModelFile,
  bytes: Uint8Array,
  config?: ModelConfig,
): Promise<StoredFile & { sha256: string }> {
  const sha256 = toHex(await crypto.subtle.digest("SHA-256", bytes));
  const policy = config === undefined ? undefined : policyMetadataOf(config);
  const object = await bucket.put(objectKey(name, version, file), bytes, {
    sha256,
    customMetadata: { sha256, ...(policy === undefined ? {} : { [POLICY_METADATA]: policy }) },
    httpMetadata: { contentType: contentTypeOf(file) },
  });
  return { size: object.size, sha256, uploaded: object.uploaded.toISOString() };
}

/**
 * A config.json's serving policy (min_copies, max_copies) rides in its object's custom metadata, which R2's
 * listings return: every registry learns every model's defaults from one listing (listPolicyDefaults), not
 * one read per model.
 */
const POLICY_METADATA = "policy";
const PolicyMetadataSchema = z.object({
  min_copies: z.int().nonnegative().optional(),
  max_copies: z.int().positive().optional(),
});

/** A model's serving policy as its config.json sets it (the gateway's defaults for every pool). */
export interface PolicyDefaults {
  minCopies?: number;
  maxCopies?: number;
}

function policyMetadataOf(config: ModelConfig): string | undefined {
  if (config.min_copies === undefined && config.max_copies === undefined) return undefined;
  return JSON.stringify({ min_copies: config.min_copies, max_copies: config.max_copies });
}

/**
 * Each model's serving policy from the config.json of its highest version that has a model.onnx (the version
 * it serves by default), from one listing; models without one are left out. A config.json uploaded before
 * policies were kept in its metadata (or written by another tool) counts as having none.
 */
export async function listPolicyDefaults(bucket: R2Bucket): Promise<Map<string, PolicyDefaults>> {
  const served = new Map<string, string>();
  const policies = new Map<string, PolicyDefaults>();
  for await (const { name, version, file, object } of modelObjects(bucket)) {
    if (file === "model.onnx") {
      const known = served.get(name);
      if (known === undefined || compareModelVersions(version, known) > 0) served.set(name, version);
    }
    const text = file === "config.json" ? object.customMetadata?.[POLICY_METADATA] : undefined;
    if (text === undefined) continue;
    const parsed = PolicyMetadataSchema.safeParse(safeJson(text));
    if (!parsed.success) continue;
    policies.set(`${name}/${version}`, {
      ...(parsed.data.min_copies === undefined ? {} : { minCopies: parsed.data.min_copies }),
      ...(parsed.data.max_copies === undefined ? {} : { maxCopies: parsed.data.max_copies }),
    });
  }
  const defaults = new Map<string, PolicyDefaults>();
  for (const [name, version] of served) {
    const policy = policies.get(`${name}/${version}`);
    if (policy !== undefined) defaults.set(name, policy);
  }
  return defaults;
}

function safeJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const SIGNATURE_FILE = "signature.json";
const signatureKey = (name: string, version: string) => `${PREFIX}${name}/${version}/${SIGNATURE_FILE}`;
const OnnxSignatureSchema = z.object({
  inputs: z.array(tensorMetadataSchema),
  outputs: z.array(tensorMetadataSchema),
});

/**
 * Reads an uploaded model.onnx's inputs and outputs from its graph's headers (its weights are stepped over,
 * not copied) and keeps them beside it. Throws OnnxFormatError when the bytes are not an ONNX model.
 */
export async function putSignatureOf(
  bucket: R2Bucket,
  name: string,
  version: string,
  model: Uint8Array,
): Promise<OnnxSignature> {
  const signature = await readOnnxSignature(memorySource(model));
  await saveSignature(bucket, name, version, signature);
  return signature;
}

/** Inputs and outputs kept for a version (or learned from an agent for one uploaded before they were kept). */
export async function getSignature(
  bucket: R2Bucket,
  name: string,
  version: string,
): Promise<OnnxSignature | undefined> {
  const object = await bucket.get(signatureKey(name, version));
  if (object === null) return undefined;
  const parsed = OnnxSignatureSchema.safeParse(await object.json().catch(() => undefined));
  return parsed.success ? parsed.data : undefined;
}

export async function saveSignature(
  bucket: R2Bucket,
  name: string,
  version: string,
  signature: OnnxSignature,
): Promise<void> {
  await bucket.put(
    signatureKey(name, version),
    JSON.stringify({ inputs: signature.inputs, outputs: signature.outputs }),
    {
      httpMetadata: { contentType: "application/json" },
    },
  );
}

/** A version's config.json, parsed; undefined when it has none (or it no longer parses). */
export async function getModelConfig(
  bucket: R2Bucket,
  name: string,
  version: string,
): Promise<ModelConfig | undefined> {
  const object = await getModelFile(bucket, name, version, "config.json");
  if (object === null) return undefined;
  try {
    return parseModelConfig(await object.text(), `${name}/${version}/config.json`);
  } catch {
    return undefined;
  }
}

/** Deletes one file, or the whole version (the files its config.json names too); the files that existed. */
export async function deleteModelFiles(
  bucket: R2Bucket,
  name: string,
  version: string,
  file?: ModelFile,
): Promise<ModelFile[]> {
  const existing: ModelFile[] = [];
  if (file === undefined) {
    for await (const stored of modelObjects(bucket, versionPrefix(name, version))) existing.push(stored.file);
  } else if ((await bucket.head(objectKey(name, version, file))) !== null) {
    existing.push(file);
  }
  const keys = existing.map((candidate) => objectKey(name, version, candidate));
  // The signature describes model.onnx: it goes with it.
  if (existing.includes("model.onnx")) keys.push(signatureKey(name, version));
  // R2 deletes at most 1,000 keys a call.
  for (let from = 0; from < keys.length; from += 1000) await bucket.delete(keys.slice(from, from + 1000));
  return existing;
}

export function getModelFile(bucket: R2Bucket, name: string, version: string, file: ModelFile) {
  return bucket.get(objectKey(name, version, file));
}

/** Every stored version, ordered by name then version; objects that are not model files are skipped. */
export async function listModelVersions(bucket: R2Bucket): Promise<StoredVersion[]> {
  const versions = new Map<string, StoredVersion>();
  for await (const { name, version, file, object } of modelObjects(bucket)) {
    const key = `${name}/${version}`;
    const entry = versions.get(key) ?? { name, version, files: {} };
    // Objects written by other tools (wrangler r2 object put) may lack the metadata: then size only.
    const sha256 = object.customMetadata?.sha256;
    entry.files[file] = {
      size: object.size,
      ...(sha256 === undefined ? {} : { sha256 }),
      uploaded: object.uploaded.toISOString(),
    };
    versions.set(key, entry);
  }
  return [...versions.values()].sort(compareModelEntries);
}

/**
 * Every model file in the bucket (or under `prefix`, one of its versions) with its custom metadata, page by
 * page; other objects are skipped.
 */
async function* modelObjects(
  bucket: R2Bucket,
  prefix = PREFIX,
): AsyncGenerator<{ name: string; version: string; file: ModelFile; object: R2Object }> {
  let cursor: string | undefined;
  do {
    const page = await bucket.list({
      prefix,
      include: ["customMetadata"],
      ...(cursor === undefined ? {} : { cursor }),
    });
    for (const object of page.objects) {
      const [name, version, ...rest] = object.key.slice(PREFIX.length).split("/");
      const file = rest.join("/");
      if (name === undefined || version === undefined || !isModelFile(file)) continue;
      if (!isModelName(name) || !isModelVersion(version)) continue;
      yield { name, version, file, object };
    }
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor !== undefined);
}

export function toHex(digest: ArrayBuffer): string {
  return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** RFC 9530 `Repr-Digest` value for a hex SHA-256. */
export function reprDigest(sha256Hex: string): string {
  const bytes = sha256Hex.match(/../g)?.map((pair) => Number.parseInt(pair, 16)) ?? [];
  return `sha-256=:${btoa(String.fromCharCode(...bytes))}:`;
}
