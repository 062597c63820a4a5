/**
 * repository.json: the optional listing of a remote model repository, with the size and SHA-256 of each
 * file so that downloads can be verified against something other than the server's own headers.
 *
 *   { "models": [ { "name": "det", "version": "1",
 *                   "files": { "model.onnx": { "size": 123, "sha256": "<hex>" },
 *                              "config.json": { "size": 45, "sha256": "<hex>" } } } ] }
 *
 * Versions may be strings or integers. Entries whose name or version is not valid are not models and
 * are left out, like badly named directories in a local repository; of duplicates, the first counts. When a version has a "files" map it
 * is complete: a config.json missing from it means the version has none.
 */
import { z } from "zod";
import { SwitchyardError } from "../../shared/errors.ts";
import { describeIssues, SHA256_HEX } from "../../shared/model-config.ts";
import { compareModelEntries, isModelName, isModelVersion } from "../../shared/model-names.ts";
import { type DownloadRequest, downloadToMemory } from "./verified-download.ts";

const MAX_MANIFEST_BYTES = 16 * 1024 * 1024;

const FileInfoSchema = z.looseObject({
  size: z.int().nonnegative().optional(),
  sha256: z
    .string()
    .regex(SHA256_HEX, "must be 64 hexadecimal digits")
    .transform((hex) => hex.toLowerCase())
    .optional(),
});

const ManifestSchema = z.looseObject({
  models: z.array(
    z.looseObject({
      name: z.string(),
      version: z.union([z.string(), z.int().positive()]).transform(String),
      files: z.record(z.string(), FileInfoSchema).optional(),
    }),
  ),
});

export type FileInfo = z.infer<typeof FileInfoSchema>;
export type ManifestModel = z.infer<typeof ManifestSchema>["models"][number];

export interface Manifest {
  models: ManifestModel[];
}

/** The repository's manifest, or undefined when it publishes none (404). */
export async function fetchManifest(
  request: Omit<DownloadRequest, "label" | "expected">,
): Promise<Manifest | undefined> {
  const label = "repository.json";
  const downloaded = await downloadToMemory({ ...request, label, expected: [] }, MAX_MANIFEST_BYTES);
  if (downloaded === undefined) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(new TextDecoder().decode(downloaded.body));
  } catch (error) {
    throw malformed(request.url, error instanceof Error ? error.message : String(error), error);
  }
  const parsed = ManifestSchema.safeParse(json);
  if (!parsed.success) throw malformed(request.url, describeIssues(parsed.error), parsed.error);
  const unique = new Map<string, ManifestModel>();
  for (const model of parsed.data.models) {
    const key = `${model.name}/${model.version}`;
    if (isModelName(model.name) && isModelVersion(model.version) && !unique.has(key)) unique.set(key, model);
  }
  return { models: [...unique.values()].sort(compareModelEntries) };
}

export function findInManifest(manifest: Manifest, name: string, version: string): ManifestModel | undefined {
  return manifest.models.find((model) => model.name === name && model.version === version);
}

export function versionsInManifest(manifest: Manifest, name: string): string[] {
  return manifest.models.filter((model) => model.name === name).map((model) => model.version);
}

function malformed(url: URL, problem: string, cause: unknown): SwitchyardError {
  return new SwitchyardError("unavailable", `${url.origin}${url.pathname} is malformed: ${problem}`, {
    cause,
  });
}
