/**
 * Where a remote repository's models live once downloaded:
 *
 *   <cacheDir>/<host>-<hash of the base URL>/<model>/<version>/model.onnx
 *                                                          .../model.onnx.sha256   "<hex sha256> <bytes>\n"
 *                                                          .../config.json         when the remote has one
 *                                                          .../model.onnx.partial  only while downloading
 *                                                          .../warmup/<file>       model_warmup's data files
 *                                                          .../labels/<file>       outputs' label files
 *                                                          .../.partial/<kind>/<file>  only while downloading
 *
 * A version is cached once its model.onnx and its .sha256 sidecar are both there and the file still has
 * the size the sidecar recorded. Committing writes the config and the sidecar first and renames the
 * verified download into place last, so an interrupted commit leaves an entry that is simply not cached
 * (and is downloaded again), never a model.onnx without a trustworthy sidecar. Versions are treated as
 * immutable: a cached version is served without asking the remote again. A file its config.json names is
 * renamed into place once verified, so one that is there is whole; one that is not is fetched when the
 * version resolves.
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import type { ReferencedFile, ReferencedKind } from "../../shared/model-config.ts";
import { isModelName, isModelVersion } from "../../shared/model-names.ts";
import type { RepositoryEntry } from "./repository.ts";

const MODEL_FILE = "model.onnx";
const SIDECAR_FILE = "model.onnx.sha256";
const CONFIG_FILE = "config.json";
const PARTIAL_DIR = ".partial";

export interface CachedModel {
  path: string;
  bytes: number;
  sha256: string;
  /** The text of the cached config.json; undefined when the remote has none. */
  configText: string | undefined;
}

/** The cache directory of one remote repository: readable host, plus a hash that tells paths apart. */
export function cacheRootFor(cacheDir: string, base: URL): string {
  const host = base.host.replace(/[^A-Za-z0-9.-]/g, "_");
  const hash = createHash("sha256").update(base.href).digest("hex").slice(0, 16);
  return join(cacheDir, `${host}-${hash}`);
}

export function versionDirOf(cacheRoot: string, name: string, version: string): string {
  return join(cacheRoot, name, version);
}

/** Where model.onnx is written while it downloads; the directory exists once this resolves. */
export async function preparePartial(cacheRoot: string, name: string, version: string): Promise<string> {
  const dir = versionDirOf(cacheRoot, name, version);
  await mkdir(dir, { recursive: true });
  return join(dir, `${MODEL_FILE}.partial`);
}

/** The cached version's directory for the files of `kind` its config.json names, whether or not it holds any yet. */
export function referencedDirOf(
  cacheRoot: string,
  name: string,
  version: string,
  kind: ReferencedKind,
): string {
  return join(versionDirOf(cacheRoot, name, version), kind);
}

const cachedPathOf = (cacheRoot: string, name: string, version: string, file: ReferencedFile) =>
  join(referencedDirOf(cacheRoot, name, version, file.kind), file.name);

/** Those of `files` that the cached version does not hold. */
export async function missingReferencedFiles(
  cacheRoot: string,
  name: string,
  version: string,
  files: readonly ReferencedFile[],
): Promise<ReferencedFile[]> {
  const present = await Promise.all(
    files.map(async (file) => (await sizeOf(cachedPathOf(cacheRoot, name, version, file))) !== undefined),
  );
  return files.filter((_, index) => !present[index]);
}

/**
 * Where a referenced file is written while it downloads, and how it moves into place once verified. Apart
 * from the finished files (in the version's .partial/), so that no name a config.json gives can be taken for
 * another file's download, nor a download a crash left for a finished file.
 */
export async function prepareReferencedPartial(
  cacheRoot: string,
  name: string,
  version: string,
  file: ReferencedFile,
): Promise<{ partialPath: string; commit: () => Promise<void> }> {
  const path = cachedPathOf(cacheRoot, name, version, file);
  const partialPath = join(versionDirOf(cacheRoot, name, version), PARTIAL_DIR, file.kind, file.name);
  await mkdir(dirname(partialPath), { recursive: true });
  return {
    partialPath,
    commit: async () => {
      await mkdir(dirname(path), { recursive: true });
      await rename(partialPath, path);
    },
  };
}

/** A complete cached version, or undefined when it is absent, half-written or no longer the recorded size. */
export async function readCachedModel(
  cacheRoot: string,
  name: string,
  version: string,
): Promise<CachedModel | undefined> {
  const dir = versionDirOf(cacheRoot, name, version);
  const sidecar = parseSidecar(await readIfPresent(join(dir, SIDECAR_FILE)));
  if (sidecar === undefined) return undefined;
  const path = join(dir, MODEL_FILE);
  const bytes = await sizeOf(path);
  if (bytes !== sidecar.bytes) return undefined;
  return { path, bytes, sha256: sidecar.sha256, configText: await readIfPresent(join(dir, CONFIG_FILE)) };
}

/** Moves a verified download into place with its sidecar and config; returns the path of model.onnx. */
export async function commitModel(
  cacheRoot: string,
  name: string,
  version: string,
  download: { partialPath: string; bytes: number; sha256: string; configText: string | undefined },
): Promise<string> {
  const dir = versionDirOf(cacheRoot, name, version);
  const configPath = join(dir, CONFIG_FILE);
  if (download.configText === undefined) await rm(configPath, { force: true });
  else await writeAtomically(configPath, download.configText);
  await writeAtomically(join(dir, SIDECAR_FILE), `${download.sha256} ${download.bytes}\n`);
  const path = join(dir, MODEL_FILE);
  await rename(download.partialPath, path);
  return path;
}

/** Every version cached completely enough to be served (model.onnx beside its sidecar). */
export async function listCachedModels(cacheRoot: string): Promise<RepositoryEntry[]> {
  const names = (await listDir(cacheRoot)).filter(isModelName);
  const perModel = await Promise.all(
    names.map(async (name) => {
      const versions = (await listDir(join(cacheRoot, name))).filter(isModelVersion);
      const complete = await Promise.all(
        versions.map(async (version) => {
          const files = await listDir(versionDirOf(cacheRoot, name, version));
          return files.includes(MODEL_FILE) && files.includes(SIDECAR_FILE) ? [{ name, version }] : [];
        }),
      );
      return complete.flat();
    }),
  );
  return perModel.flat();
}

function parseSidecar(text: string | undefined): { sha256: string; bytes: number } | undefined {
  const match = text === undefined ? null : /^([0-9a-f]{64}) (\d+)\n?$/.exec(text);
  if (!match?.[1] || !match[2]) return undefined;
  return { sha256: match[1], bytes: Number(match[2]) };
}

async function writeAtomically(path: string, text: string): Promise<void> {
  const temporary = `${path}.tmp`;
  await writeFile(temporary, text);
  await rename(temporary, path);
}

async function readIfPresent(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch {
    return undefined;
  }
}

async function sizeOf(path: string): Promise<number | undefined> {
  try {
    const stats = await stat(path);
    return stats.isFile() ? stats.size : undefined;
  } catch {
    return undefined;
  }
}

async function listDir(path: string): Promise<string[]> {
  try {
    return await readdir(path);
  } catch {
    return [];
  }
}
