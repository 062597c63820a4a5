/**
 * Model repositories on disk, in Triton's layout, as `npm start`, the tests and the benchmarks write them
 * (scripts/lib/: development tooling they share, not part of the agent or the gateway):
 *
 *   <repo>/<model>/config.json          (optional, shared by all versions, as Triton's config.pbtxt is)
 *   <repo>/<model>/<version>/model.onnx
 *   <repo>/<model>/model.onnx           (the unversioned layout, version: null)
 *
 * Every file is written atomically (temporary file, then rename) and only when its content changed, so
 * regenerating a repository that another test run is reading never shows it a half-written model.
 */
import { closeSync, mkdirSync, openSync, readSync, renameSync, statSync, writeSync } from "node:fs";
import { dirname, join } from "node:path";
import { type EncodedModel, encodeMlp, type MlpSpec, mlpForBytes } from "./onnx-builder.ts";

export const MODEL_FILE = "model.onnx";
export const CONFIG_FILE = "config.json";

export interface RepositoryModel {
  name: string;
  /** A version directory ("1" when left out); null puts model.onnx directly in the model directory. */
  version?: string | null;
  /** The model, in memory or streamed (see encodeMlp for models too big to hold). */
  bytes: Uint8Array | EncodedModel;
  /** Written as <repo>/<name>/config.json. */
  config?: object;
}

export interface WrittenFile {
  path: string;
  byteLength: number;
  /** False when the file was already there with exactly this content. */
  changed: boolean;
}

export function modelPath(dir: string, name: string, version: string | null = "1"): string {
  return version === null ? join(dir, name, MODEL_FILE) : join(dir, name, version, MODEL_FILE);
}

function asEncoded(bytes: Uint8Array | EncodedModel): EncodedModel {
  return bytes instanceof Uint8Array ? { byteLength: bytes.byteLength, chunks: () => [bytes] } : bytes;
}

/** True when `path` holds exactly the bytes of `content`, compared chunk by chunk without loading the file. */
function sameContent(path: string, content: EncodedModel): boolean {
  let size: number;
  try {
    size = statSync(path).size;
  } catch {
    return false;
  }
  if (size !== content.byteLength) return false;
  const fd = openSync(path, "r");
  try {
    let position = 0;
    for (const chunk of content.chunks()) {
      const existing = Buffer.alloc(chunk.byteLength);
      readSync(fd, existing, 0, chunk.byteLength, position);
      if (!existing.equals(chunk)) return false;
      position += chunk.byteLength;
    }
    return true;
  } finally {
    closeSync(fd);
  }
}

/** Writes `content` to `path` unless it is already there; streams, so size is bounded only by the disk. */
export function writeFileIfChanged(path: string, content: Uint8Array | EncodedModel): WrittenFile {
  const encoded = asEncoded(content);
  if (sameContent(path, encoded)) return { path, byteLength: encoded.byteLength, changed: false };
  mkdirSync(dirname(path), { recursive: true });
  const temporary = `${path}.${process.pid}.tmp`;
  const fd = openSync(temporary, "w");
  try {
    for (const chunk of encoded.chunks()) {
      for (let written = 0; written < chunk.byteLength; ) {
        written += writeSync(fd, chunk, written, chunk.byteLength - written);
      }
    }
  } finally {
    closeSync(fd);
  }
  renameSync(temporary, path);
  return { path, byteLength: encoded.byteLength, changed: true };
}

/** Writes each model (and its config.json when given); returns what was written, model files first. */
export function writeModelRepository(dir: string, models: RepositoryModel[]): WrittenFile[] {
  return models.flatMap(({ name, version, bytes, config }) => {
    const written = [writeFileIfChanged(modelPath(dir, name, version === undefined ? "1" : version), bytes)];
    if (config !== undefined) {
      const json = new TextEncoder().encode(`${JSON.stringify(config, null, 2)}\n`);
      written.push(writeFileIfChanged(join(dir, name, CONFIG_FILE), json));
    }
    return written;
  });
}

export function multiplexModelName(index: number): string {
  return `m${String(index).padStart(3, "0")}`;
}

export interface MultiplexOptions {
  count: number;
  targetBytes: number;
  /** Model i gets seed seedBase + i: one architecture, different weights. */
  seedBase: number;
}

/** The specs `multiplexRepository` writes, in order (m000, m001, …), for computing expected outputs. */
export function multiplexSpecs({ count, targetBytes, seedBase }: MultiplexOptions): MlpSpec[] {
  return Array.from({ length: count }, (_, index) =>
    mlpForBytes({ targetBytes, seed: seedBase + index, name: multiplexModelName(index) }),
  );
}

/** Writes m000…m{count-1}: MLPs of one architecture and size, each with its own weights, streamed to disk. */
export function multiplexRepository(dir: string, options: MultiplexOptions): WrittenFile[] {
  return multiplexSpecs(options).map((spec, index) =>
    writeFileIfChanged(modelPath(dir, multiplexModelName(index)), encodeMlp(spec)),
  );
}
