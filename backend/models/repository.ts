/**
 * Where the agent's models come from: a local directory in Triton's layout, or the same layout behind an
 * http(s) URL (downloaded into a cache). Either way the rest of the agent sees this one interface (open-repository.ts picks the implementation): what the
 * repository offers, and a local, verified model.onnx for a (name, version).
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import type { ModelConfig, ReferencedFile } from "../../shared/model-config.ts";

export interface ResolvedModel {
  name: string;
  version: string;
  /** Absolute local path of model.onnx. */
  path: string;
  bytes: number;
  /** Hex SHA-256 of model.onnx, where known: from config.json (local, verified) or computed while downloading. */
  sha256?: string;
  config: ModelConfig;
  /**
   * Where config.json's model_warmup samples find their input_data_file: Triton's warmup/ in a local
   * repository's model directory; for an http repository, the version's cached copy of the files it serves.
   */
  warmupDir: string;
  /** Where its outputs' label_filename files are: a local repository's model directory; for http, as above. */
  labelsDir: string;
}

/** The directories where the files a model's config.json names are, by kind. */
export type ReferencedDirs = Pick<ResolvedModel, "warmupDir" | "labelsDir">;

/** Where a file the model's config.json names is on this machine (ResolvedModel's directory for its kind). */
export function referencedPath(dirs: ReferencedDirs, file: ReferencedFile): string {
  // config.json's schema keeps the name inside that directory (isReferencedFileName).
  return join(file.kind === "warmup" ? dirs.warmupDir : dirs.labelsDir, file.name);
}

/**
 * The bytes of a file the model's config.json names, or an Error whose message says why not, in words a
 * load's failure carries after naming the file: "is not in the model's warmup/ directory", "could not be
 * read (EACCES)".
 */
export async function readReferencedFile(dirs: ReferencedDirs, file: ReferencedFile): Promise<Uint8Array> {
  try {
    return new Uint8Array(await readFile(referencedPath(dirs, file)));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    const where = file.kind === "warmup" ? "the model's warmup/ directory" : "the model's directory";
    throw new Error(code === "ENOENT" ? `is not in ${where}` : `could not be read (${code})`, {
      cause: error,
    });
  }
}

export interface RepositoryEntry {
  name: string;
  version: string;
  /** Size of model.onnx, where the repository knows it without downloading (a local file, a listing). */
  bytes?: number;
}

export interface ModelRepository {
  /** Where the models come from, for logs and the startup summary; never carries credentials. */
  readonly source: string;
  /** The files are on this machine: describing every model costs a few reads, not downloads. */
  readonly local: boolean;
  /** Every (model, version) the repository offers. */
  index(): Promise<RepositoryEntry[]>;
  /**
   * A model ready to load: version omitted means the highest. Remote files are fetched into the cache
   * first; model.onnx is verified against its sha256 when one is known. Throws a 404 SwitchyardError when
   * the model or version is absent, 400 for an invalid name or version.
   */
  resolve(name: string, version?: string): Promise<ResolvedModel>;
}

export interface DownloadProgress {
  name: string;
  version: string;
  received: number;
  total?: number;
}

export interface RepositoryOptions {
  /** Where downloaded models are kept; unused by local repositories. */
  cacheDir: string;
  fetch?: typeof fetch;
  /** Sent with every request to a remote repository, such as `Authorization: Bearer <token>`. */
  headers?: Record<string, string>;
  /** Called as model.onnx downloads arrive. */
  onProgress?: (progress: DownloadProgress) => void;
}
