import { existsSync, statSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { referencedFiles } from "../../shared/model-config.ts";
import { modelKey } from "../../shared/model-names.ts";
import {
  type ModelFile,
  type ReferencedModelFile,
  referencedModelFile,
} from "../../shared/protocol/model-listing.ts";
import { sha256OfFile } from "../models/file-sha256.ts";
import { openLocalRepository } from "../models/local-repository.ts";
import { referencedPath } from "../models/repository.ts";
import type { AdminClient, StoredVersion } from "./admin-client.ts";
import { clearLine, drawOver, progressLine } from "./progress-bar.ts";
import { formatSize } from "./size.ts";

/**
 * `switchyard models push <dir>`: uploads a model repository in Triton's layout to the gateway's R2
 * bucket, version by version: model.onnx, the files its config.json names (model_warmup's data files from the
 * model's warmup/, outputs' label files from the model's directory; one missing stops the push, as it would
 * fail every load), then the config.json that applies to that version (the version's own, else the model's).
 * Each file's sha256 is computed here first and compared with the one the gateway computed on arrival, so a
 * corrupted upload is caught. A version the gateway already holds with the same sha256s is skipped (pushing
 * twice is cheap), unless --force.
 */
export interface PushOptions {
  dir: string;
  /** Only these models (all when empty). */
  models: readonly string[];
  force: boolean;
  client: AdminClient;
  out: NodeJS.WritableStream & { columns?: number; isTTY?: boolean };
}

export interface PushSummary {
  pushed: number;
  unchanged: number;
}

interface LocalFile {
  path: string;
  size: number;
  sha256: string;
}

interface LocalVersion {
  name: string;
  version: string;
  model: LocalFile;
  config?: LocalFile;
  /** The files its config.json names. */
  referenced: Array<LocalFile & { file: ReferencedModelFile }>;
}

export async function pushModels(options: PushOptions): Promise<PushSummary> {
  const { out, client } = options;
  if (!existsSync(options.dir) || !statSync(options.dir).isDirectory()) {
    throw new Error(
      `${options.dir} is not a directory: give a model repository (<model>/<version>/model.onnx)`,
    );
  }
  const repository = openLocalRepository(options.dir);
  const entries = (await repository.index()).filter(
    (entry) => options.models.length === 0 || options.models.includes(entry.name),
  );
  if (entries.length === 0) {
    throw new Error(
      `no models in ${options.dir}${options.models.length === 0 ? "" : ` named ${options.models.join(", ")}`}: expected <model>/<version>/model.onnx`,
    );
  }
  const stored = new Map((await client.list()).map((entry) => [modelKey(entry), entry]));
  const summary: PushSummary = { pushed: 0, unchanged: 0 };
  for (const entry of entries) {
    const local = await describe(repository, options.dir, entry.name, entry.version);
    const label = modelKey(local);
    if (!options.force && sameAsStored(local, stored.get(label))) {
      say(out, `= ${label}  unchanged (sha256 ${local.model.sha256.slice(0, 12)}…)`);
      summary.unchanged += 1;
      continue;
    }
    await upload(options, local, "model.onnx", local.model);
    // The config last: once it is there, every file it names is too.
    for (const referenced of local.referenced) await upload(options, local, referenced.file, referenced);
    if (local.config !== undefined) await upload(options, local, "config.json", local.config);
    summary.pushed += 1;
  }
  say(out, `pushed ${summary.pushed}, unchanged ${summary.unchanged} (gateway ${client.base.origin})`);
  return summary;
}

async function describe(
  repository: ReturnType<typeof openLocalRepository>,
  root: string,
  name: string,
  version: string,
): Promise<LocalVersion> {
  const resolved = await repository.resolve(name, version);
  const model = {
    path: resolved.path,
    size: resolved.bytes,
    sha256: resolved.sha256 ?? (await sha256OfFile(resolved.path)),
  };
  // The nearest config.json, as the agent reads it: the version's own, else the model directory's.
  const modelDir = resolve(root, name);
  const versionDir = dirname(resolved.path);
  const places = versionDir === modelDir ? [modelDir] : [versionDir, modelDir];
  const configPath = places.map((place) => join(place, "config.json")).find((path) => existsSync(path));
  if (configPath === undefined) return { name, version, model, referenced: [] };
  const referenced = await Promise.all(
    referencedFiles(resolved.config).map(async (file) => {
      const path = referencedPath(resolved, file);
      if (!existsSync(path) || !statSync(path).isFile()) {
        const what =
          file.kind === "warmup" ? "model_warmup names input_data_file" : "output names label_filename";
        throw new Error(
          `${modelKey({ name, version })}: config.json's ${what} '${file.name}', but ${path} is not there`,
        );
      }
      return { file: referencedModelFile(file), ...(await localFile(path)) };
    }),
  );
  return { name, version, model, config: await localFile(configPath), referenced };
}

async function localFile(path: string): Promise<LocalFile> {
  return { path, size: statSync(path).size, sha256: await sha256OfFile(path) };
}

function sameAsStored(local: LocalVersion, stored: StoredVersion | undefined): boolean {
  if (stored === undefined) return false;
  const same = (file: ModelFile, source: LocalFile | undefined) =>
    stored.files[file]?.sha256 === source?.sha256;
  return (
    same("model.onnx", local.model) &&
    same("config.json", local.config) &&
    local.referenced.every((referenced) => same(referenced.file, referenced))
  );
}

async function upload(
  options: PushOptions,
  local: LocalVersion,
  file: ModelFile,
  source: LocalFile,
): Promise<void> {
  const { out } = options;
  const label = `${modelKey(local)} ${file}`;
  const tty = out.isTTY === true;
  const started = performance.now();
  let lastDraw = 0;
  const stored = await options.client.put(
    local.name,
    local.version,
    file,
    source.path,
    source.size,
    (sent) => {
      const now = performance.now();
      if (!tty || now - lastDraw < 100) return;
      lastDraw = now;
      drawOver(
        out,
        progressLine("⇡", label, { done: sent, total: source.size, seconds: (now - started) / 1000 }),
      );
    },
  );
  if (tty) clearLine(out);
  if (stored.sha256 !== source.sha256) {
    throw new Error(
      `${label}: the gateway stored sha256 ${stored.sha256}, but the file's is ${source.sha256}: the upload was corrupted; push again`,
    );
  }
  const seconds = (performance.now() - started) / 1000;
  say(out, `↑ ${label}  ${formatSize(source.size)} in ${seconds.toFixed(1)} s  sha256 ${source.sha256}`);
}

function say(out: NodeJS.WritableStream, line: string): void {
  out.write(`${line}\n`);
}
