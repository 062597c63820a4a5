/**
 * The GPU benchmark (issue 6): the agent's overhead against raw onnxruntime-node, dynamic batching off and
 * on, model swaps and device memory, and the session settings the agent can tune on CUDA.
 *
 *   npm run bench:gpu                              from a checkout on a GPU host
 *   node dist/gpu-bench.mjs --models .gpu-models --out $OUT    the bundle (npm run build:bundles)
 *
 * Options: --models <dir holding det/1/model.onnx> (default .gpu-models, else PP-OCRv4 from node_modules),
 * --out <dir> (default bench/results/gpu-run), --gpu <id> (0), --device cpu (a dry run without a GPU),
 * --quick (short runs, small models), --parts variants,overhead,batching,http,swaps,shapes (all by default).
 * Where no GPU is usable it says so and exits 0.
 */
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { probeDevice, type ReplicaDevice } from "../../backend/replica/device.ts";
import { batchingInProcess, batchingOverHttp } from "./batching.ts";
import { writeBenchRepository } from "./bench-models.ts";
import type { BenchContext } from "./context.ts";
import { overhead } from "./overhead.ts";
import { renderReport } from "./report.ts";
import { sessionVariants } from "./session-variants.ts";
import { shapeChanges } from "./shape-changes.ts";
import { swaps } from "./swaps.ts";

const PARTS = ["variants", "overhead", "batching", "http", "swaps", "shapes"] as const;
type Part = (typeof PARTS)[number];

const { values } = parseArgs({
  options: {
    models: { type: "string", default: ".gpu-models" },
    out: { type: "string", default: "bench/results/gpu-run" },
    gpu: { type: "string", default: "0" },
    device: { type: "string", default: "cuda" },
    quick: { type: "boolean", default: false },
    parts: { type: "string", default: PARTS.join(",") },
  },
});

async function detModelPath(modelsDir: string): Promise<string> {
  const local = resolve(modelsDir, "det", "1", "model.onnx");
  if (existsSync(local)) return local;
  // A checkout with its devDependencies has PP-OCRv4 in node_modules.
  const { PPOCR_DET_PATH } = await import("../../test/fixtures/ppocr.ts");
  return PPOCR_DET_PATH;
}

function gpuDescription(deviceId: number): string {
  try {
    return execFileSync(
      "nvidia-smi",
      ["--query-gpu=name,memory.total,driver_version", "--format=csv,noheader", "-i", String(deviceId)],
      { encoding: "utf8" },
    ).trim();
  } catch {
    return "unknown (nvidia-smi failed)";
  }
}

async function main(): Promise<void> {
  const deviceId = Number(values.gpu);
  const device: ReplicaDevice = values.device === "cpu" ? { kind: "cpu" } : { kind: "cuda", deviceId };
  if (device.kind === "cuda") {
    try {
      await probeDevice(device);
    } catch (error) {
      console.log(
        `bench:gpu needs a CUDA GPU that onnxruntime can use, and this machine has none: ${(error as Error).message}\n` +
          "Nothing was measured. Run it on a GPU host (see README: GPU hosts), or try --device cpu --quick for a dry run.",
      );
      return;
    }
  }
  const parts = new Set(values.parts.split(",").map((part) => part.trim()) as Part[]);
  const outDir = resolve(values.out);
  mkdirSync(outDir, { recursive: true });
  const work = mkdtempSync(join(os.tmpdir(), "switchyard-gpu-bench-"));
  const repoDir = join(work, "repo");
  writeBenchRepository(repoDir, await detModelPath(values.models));
  const started = performance.now();
  const context: BenchContext = {
    device,
    repoDir,
    swapDir: join(work, "swap"),
    quick: values.quick,
    detSize: values.quick ? 160 : 640,
    agentDeviceArgs:
      device.kind === "cuda"
        ? ["--device", "cuda", "--gpus", String(deviceId)]
        : ["--device", "cpu", "--threads", String(os.availableParallelism())],
    log: (line) => console.log(`[${((performance.now() - started) / 1000).toFixed(1)}s] ${line}`),
  };
  const results: Record<string, unknown> = {
    gpu: device.kind === "cuda" ? gpuDescription(deviceId) : "none (CPU dry run)",
    device: device.kind === "cuda" ? `cuda:${deviceId}` : "cpu",
    cpus: `${os.availableParallelism()} × ${os.cpus()[0]?.model ?? "?"}`,
    node: process.version,
    command: process.argv.slice(1).join(" "),
    detInput: [1, 3, context.detSize, context.detSize],
  };
  const save = () => {
    results.elapsedS = Math.round((performance.now() - started) / 1000);
    writeFileSync(join(outDir, "gpu-bench.json"), `${JSON.stringify(results, null, 2)}\n`);
    writeFileSync(join(outDir, "gpu-bench.md"), renderReport(results));
  };
  context.log(`benchmark on ${results.gpu}`);
  const steps: Array<[Part, () => Promise<unknown>]> = [
    ["variants", () => sessionVariants(context)],
    ["overhead", () => overhead(context)],
    ["batching", () => batchingInProcess(context)],
    ["swaps", () => swaps(context)],
    ["http", () => batchingOverHttp(context)],
    ["shapes", () => shapeChanges(context)],
  ];
  for (const [part, run] of steps) {
    if (!parts.has(part)) continue;
    try {
      results[part] = await run();
    } catch (error) {
      results[part] = { error: error instanceof Error ? (error.stack ?? error.message) : String(error) };
      context.log(`${part} failed: ${(error as Error).message}`);
    }
    save();
  }
  context.log(`done: ${join(outDir, "gpu-bench.json")}`);
}

await main();
