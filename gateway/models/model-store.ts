import { compareModelEntries, isModelName, isModelVersion } from "../../shared/model-names.ts";
import {
  MODEL_FILES,
  type ModelFile,
  type StoredFile,
  type StoredVersion,
} from "../../shared/protocol/model-listing.ts";

/**
 * The gateway's model repository in R2: `models/<name>/<version>/model.onnx` and, optionally,
 * `models/<name>/<version>/config.json`. Each object carries its SHA-256 twice: as R2's own checksum (R2
 * verifies the upload against it) and as custom metadata (which listings return, so repository.json
 * needs no reads of the files themselves).
 */
export { MODEL_FILES, type ModelFile, type StoredFile, type StoredVersion };

export const isModelFile = (file: string): file is ModelFile =>
  (MODEL_FILES as readonly string[]).includes(file);

const PREFIX = "models/";
const objectKey = (name: string, version: string, file: ModelFile) => `${PREFIX}${name}/${version}/${file}`;

export async function putModelFile(
  bucket: R2Bucket,
  name: string,
  version: string,
  file: ModelFile,
  bytes: Uint8Array,
): Promise<StoredFile & { sha256: string }> {
  const sha256 = toHex(await crypto.subtle.digest("SHA-256", bytes));
  const object = await bucket.put(objectKey(name, version, file), bytes, {
    sha256,
    customMetadata: { sha256 },
    httpMetadata: { contentType: file === "config.json" ? "application/json" : "application/octet-stream" },
  });
  return { size: object.size, sha256, uploaded: object.uploaded.toISOString() };
}

/** Deletes one file, or the whole version; the files that existed. */
export async function deleteModelFiles(
  bucket: R2Bucket,
  name: string,
  version: string,
  file?: ModelFile,
): Promise<ModelFile[]> {
  const files = file === undefined ? [...MODEL_FILES] : [file];
  const existing: ModelFile[] = [];
  for (const candidate of files) {
    if ((await bucket.head(objectKey(name, version, candidate))) !== null) existing.push(candidate);
  }
  if (existing.length > 0)
    await bucket.delete(existing.map((candidate) => objectKey(name, version, candidate)));
  return existing;
}

export function getModelFile(bucket: R2Bucket, name: string, version: string, file: ModelFile) {
  return bucket.get(objectKey(name, version, file));
}

/** Every stored version, ordered by name then version; objects that are not model files are skipped. */
export async function listModelVersions(bucket: R2Bucket): Promise<StoredVersion[]> {
  const versions = new Map<string, StoredVersion>();
  let cursor: string | undefined;
  do {
    const page = await bucket.list({
      prefix: PREFIX,
      include: ["customMetadata"],
      ...(cursor === undefined ? {} : { cursor }),
    });
    for (const object of page.objects) {
      const [name, version, file, ...rest] = object.key.slice(PREFIX.length).split("/");
      if (name === undefined || version === undefined || file === undefined || rest.length > 0) continue;
      if (!isModelName(name) || !isModelVersion(version) || !isModelFile(file)) continue;
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
    cursor = page.truncated ? page.cursor : undefined;
  } while (cursor !== undefined);
  return [...versions.values()].sort(compareModelEntries);
}

export function toHex(digest: ArrayBuffer): string {
  return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** RFC 9530 `Repr-Digest` value for a hex SHA-256. */
export function reprDigest(sha256Hex: string): string {
  const bytes = sha256Hex.match(/../g)?.map((pair) => Number.parseInt(pair, 16)) ?? [];
  return `sha-256=:${btoa(String.fromCharCode(...bytes))}:`;
}
