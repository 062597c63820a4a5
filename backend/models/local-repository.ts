/**
 * A model repository in a local directory, in Triton's layout:
 *
 *   <repo>/<model>/<version>/model.onnx      versions are positive integers ("1", "2", ...)
 *   <repo>/<model>/model.onnx                counts as version 1 (unless <model>/1/model.onnx exists)
 *   <repo>/<model>/[<version>/]config.json   optional metadata and limits
 *
 * The nearest config.json applies as a whole: one in the version directory replaces the model
 * directory's, which otherwise applies to every version. Entries whose names are not valid model names or
 * versions (".git", "01", "latest") are not models and are skipped. Nothing is cached between calls: every
 * index() and resolve() looks at the directory again (a readdir per model, a stat per version), so models
 * copied in while the agent runs show up. The only memory kept is the SHA-256 of files already verified,
 * keyed by size and mtime, so that a large model is not hashed again on every resolve.
 */
import type { Stats } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";
import { modelNotFound, SwitchyardError, versionNotFound } from "../../shared/errors.ts";
import {
  defaultModelConfig,
  type ModelConfig,
  parseModelConfig,
  WARMUP_DIR,
} from "../../shared/model-config.ts";
import {
  compareModelEntries,
  compareModelVersions,
  highestModelVersion,
  isModelName,
  isModelVersion,
  parseModelName,
  parseModelVersion,
} from "../../shared/model-names.ts";
import { sha256OfFile } from "./file-sha256.ts";
import type { ModelRepository, RepositoryEntry, ResolvedModel } from "./repository.ts";

const MODEL_FILE = "model.onnx";
/** Triton's directory of warm-up data files, beside the versions. */
const CONFIG_FILE = "config.json";

interface HashedFile {
  size: number;
  mtimeMs: number;
  sha256: string;
}

export function openLocalRepository(root: string): ModelRepository {
  const hashes = new Map<string, HashedFile>();

  async function sha256Of(path: string, stats: Stats): Promise<string> {
    const known = hashes.get(path);
    if (known && known.size === stats.size && known.mtimeMs === stats.mtimeMs) return known.sha256;
    const sha256 = await sha256OfFile(path);
    hashes.set(path, { size: stats.size, mtimeMs: stats.mtimeMs, sha256 });
    return sha256;
  }

  return {
    source: root,
    local: true,

    async index(): Promise<RepositoryEntry[]> {
      const names = (await listRoot(root)).filter(isModelName);
      const perModel = await Promise.all(
        names.map(async (name) =>
          Promise.all(
            [...(await versionsOf(root, name))].map(async ([version, dir]) => {
              const stats = await statFile(join(dir, MODEL_FILE));
              return stats === undefined ? { name, version } : { name, version, bytes: stats.size };
            }),
          ),
        ),
      );
      return perModel.flat().sort(compareModelEntries);
    },

    async resolve(name: string, version?: string): Promise<ResolvedModel> {
      parseModelName(name);
      if (version !== undefined) parseModelVersion(version);
      const versions = await versionsOf(root, name);
      if (versions.size === 0) {
        await listRoot(root); // a missing repository says so, rather than "model not found"
        throw modelNotFound(name);
      }
      const chosen = version ?? highestModelVersion(versions.keys());
      const dir = chosen === undefined ? undefined : versions.get(chosen);
      if (chosen === undefined || dir === undefined) {
        throw versionNotFound(name, String(version), [...versions.keys()].sort(compareModelVersions));
      }

      const path = join(dir, MODEL_FILE);
      const stats = await statFile(path);
      if (stats === undefined) throw versionNotFound(name, chosen, []);
      const config = await readVersionConfig(root, name, chosen, dir);
      const resolved: ResolvedModel = {
        name,
        version: chosen,
        path,
        bytes: stats.size,
        config,
        warmupDir: join(root, name, WARMUP_DIR),
        labelsDir: join(root, name),
      };
      if (config.sha256 !== undefined) {
        const actual = await sha256Of(path, stats);
        if (actual !== config.sha256) {
          throw new SwitchyardError(
            "model_load_failed",
            `${name}/${chosen}/${MODEL_FILE} does not match the sha256 in its config.json ` +
              `(expected ${config.sha256}, file has ${actual})`,
          );
        }
        resolved.sha256 = actual;
      }
      return resolved;
    },
  };
}

/** Names in the repository directory; a repository that is missing or unreadable is an error. */
async function listRoot(root: string): Promise<string[]> {
  try {
    return await readdir(root);
  } catch (error) {
    throw new SwitchyardError(
      "unavailable",
      `cannot read the model repository ${root}: ${messageOf(error)}`,
      {
        cause: error,
      },
    );
  }
}

/** Each version of a model that has a model.onnx, with the directory holding it. */
async function versionsOf(root: string, name: string): Promise<Map<string, string>> {
  const modelDir = join(root, name);
  let entries: string[];
  try {
    entries = await readdir(modelDir);
  } catch {
    return new Map(); // not a directory, or gone since the root was listed: not a model
  }
  const versions = new Map<string, string>();
  await Promise.all(
    entries.filter(isModelVersion).map(async (version) => {
      const dir = join(modelDir, version);
      if (await statFile(join(dir, MODEL_FILE))) versions.set(version, dir);
    }),
  );
  // The flat layout is version 1; a "1" directory with its own model.onnx takes precedence.
  if (!versions.has("1") && entries.includes(MODEL_FILE) && (await statFile(join(modelDir, MODEL_FILE)))) {
    versions.set("1", modelDir);
  }
  return versions;
}

/** The config of one version: its own config.json, else the model's, else the defaults. */
async function readVersionConfig(
  root: string,
  name: string,
  version: string,
  versionDir: string,
): Promise<ModelConfig> {
  const modelDir = join(root, name);
  const modelLevel: [string, string] = [join(modelDir, CONFIG_FILE), `${name}/${CONFIG_FILE}`];
  const places =
    versionDir === modelDir
      ? [modelLevel]
      : [
          [join(versionDir, CONFIG_FILE), `${name}/${version}/${CONFIG_FILE}`] as [string, string],
          modelLevel,
        ];
  for (const [path, where] of places) {
    const text = await readIfPresent(path, where);
    if (text !== undefined) return parseModelConfig(text, where);
  }
  return defaultModelConfig();
}

async function readIfPresent(path: string, where: string): Promise<string | undefined> {
  try {
    return await readFile(path, "utf8");
  } catch (error) {
    if (isMissing(error)) return undefined;
    throw new SwitchyardError("model_load_failed", `cannot read ${where}: ${messageOf(error)}`, {
      cause: error,
    });
  }
}

/** Stats of a regular file (following symlinks), or undefined when there is none. */
async function statFile(path: string): Promise<Stats | undefined> {
  try {
    const stats = await stat(path);
    return stats.isFile() ? stats : undefined;
  } catch {
    return undefined;
  }
}

function isMissing(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === "ENOENT" || code === "ENOTDIR";
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
