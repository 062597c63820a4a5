/**
 * The models the GPU benchmark runs, written on the machine that runs it (big models are generated there,
 * never carried): PP-OCRv4 detection linked from the given directory, a 256 KB MLP whose runs are all
 * overhead, and MLPs of 50 MB, 200 MB and 1 GB for model swaps.
 */
import { existsSync, linkSync, mkdirSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { encodeMlp, mlpForBytes } from "../../test/fixtures/onnx-builder.ts";
import { modelPath, writeFileIfChanged } from "../../test/fixtures/repository.ts";

export const DET = "det";
export const SMALL_MLP = "mlp";

export function detInput(rows: number, size: number): Tensor {
  const plane = 3 * size * size;
  const data = new Float32Array(rows * plane);
  for (let index = 0; index < data.length; index += 1) data[index] = Math.sin((index % plane) / 977) * 0.8;
  return { name: "x", datatype: "FP32", shape: [rows, 3, size, size], data };
}

export function mlpInput(rows: number): Tensor {
  return {
    name: "x",
    datatype: "FP32",
    shape: [rows, 16],
    data: Float32Array.from({ length: rows * 16 }, (_, index) => Math.cos(index)),
  };
}

/** A repository holding det (linked from `detPath`) and the small MLP. */
export function writeBenchRepository(dir: string, detPath: string): void {
  const det = modelPath(dir, DET);
  if (!existsSync(det)) {
    mkdirSync(join(dir, DET, "1"), { recursive: true });
    symlinkSync(detPath, det);
  }
  writeFileIfChanged(
    modelPath(dir, SMALL_MLP),
    encodeMlp(mlpForBytes({ targetBytes: 256 * 1024, seed: 7, name: SMALL_MLP })),
  );
}

export const swapModelName = (megabytes: number) => `mlp${megabytes}m`;

/** An MLP of about `megabytes` MB (streamed to disk), and `copies` more names for the same file. */
export function writeSwapModel(
  dir: string,
  megabytes: number,
  copies = 0,
): { name: string; bytes: number; copies: string[] } {
  const name = swapModelName(megabytes);
  const written = writeFileIfChanged(
    modelPath(dir, name),
    encodeMlp(mlpForBytes({ targetBytes: megabytes * 2 ** 20, seed: megabytes, name })),
  );
  const names: string[] = [];
  for (let copy = 0; copy < copies; copy += 1) {
    const copyName = `${name}_${copy}`;
    const path = modelPath(dir, copyName);
    if (!existsSync(path)) {
      mkdirSync(join(dir, copyName, "1"), { recursive: true });
      linkSync(written.path, path);
    }
    names.push(copyName);
  }
  return { name, bytes: written.byteLength, copies: names };
}
