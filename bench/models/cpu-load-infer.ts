/**
 * Load time and inference time per model size on the CPU, through the agent's own Replica (the code path a
 * request takes, minus HTTP). Models are generated MLPs of one architecture (16 -> hidden -> 8) sized from
 * 1 MB to 1 GB, plus PP-OCRv4 detection. Writes bench/results/cpu-models.md.
 *   npm run bench:cpu-models
 */
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import { dirname, join } from "node:path";
import { openRepository } from "../../backend/models/open-repository.ts";
import { Replica } from "../../backend/replica/replica.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { encodeMlp, mlpForBytes } from "../../test/fixtures/onnx-builder.ts";
import { PPOCR_DET_DIMS, PPOCR_DET_PATH, ppocrDetSampleInput } from "../../test/fixtures/ppocr.ts";
import { modelPath, writeFileIfChanged } from "../../test/fixtures/repository.ts";

const SIZES_MB = [1, 10, 100, 1000];
/** The MLPs' architecture: mlpForBytes varies only the hidden width with the size. */
const MLP_SHAPE = mlpForBytes({ targetBytes: 1e6, seed: 0 });
/** The onnxruntime-node that runs the sessions, as installed. */
const ORT_VERSION = (createRequire(import.meta.url)("onnxruntime-node/package.json") as { version: string })
  .version;
const LOADS = 3;
const RUNS = 30;

const repoDir = mkdtempSync(join(os.tmpdir(), "switchyard-bench-models-"));
const median = (values: number[]) =>
  [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)] ?? Number.NaN;

function mlpInput(batch: number): Tensor {
  const features = MLP_SHAPE.inputDim;
  return {
    name: "x",
    datatype: "FP32",
    shape: [batch, features],
    data: new Float32Array(batch * features).fill(0.5),
  };
}

interface Row {
  model: string;
  bytes: number;
  loadMs: number;
  inferBatch1Ms: number;
  inferBatch32Ms?: number;
}

async function measure(name: string, bytes: number, inputFor: (batch: number) => Tensor, batches: number[]) {
  const loadTimes: number[] = [];
  const inferTimes = new Map<number, number[]>(batches.map((batch) => [batch, []]));
  for (let load = 0; load < LOADS; load += 1) {
    // A fresh replica each time: every load is a real cold load of the session.
    const replica = new Replica({
      id: "0",
      device: { kind: "cpu" },
      repository: openRepository(repoDir, { cacheDir: join(repoDir, ".cache") }),
      maxModels: 1,
      maxModelBytes: 4 * 2 ** 30,
      keepAliveMs: 0,
      maxConcurrency: 1,
    });
    const first = await replica.infer({ model: name, inputs: [inputFor(1)] });
    loadTimes.push(first.timings.loadMs);
    for (const batch of batches) {
      for (let run = 0; run < RUNS / LOADS; run += 1) {
        const outcome = await replica.infer({ model: name, inputs: [inputFor(batch)] });
        inferTimes.get(batch)?.push(outcome.timings.inferMs);
      }
    }
    await replica.close();
  }
  const row: Row = {
    model: name,
    bytes,
    loadMs: median(loadTimes),
    inferBatch1Ms: median(inferTimes.get(1) ?? []),
  };
  if (batches.includes(32)) row.inferBatch32Ms = median(inferTimes.get(32) ?? []);
  console.log(JSON.stringify(row));
  return row;
}

const rows: Row[] = [];
try {
  for (const megabytes of SIZES_MB) {
    const name = `mlp_${megabytes}mb`;
    const spec = mlpForBytes({ targetBytes: megabytes * 1e6, seed: megabytes, name });
    const written = writeFileIfChanged(modelPath(repoDir, name), encodeMlp(spec));
    rows.push(await measure(name, written.byteLength, mlpInput, [1, 32]));
  }
  const detPath = modelPath(repoDir, "det");
  mkdirSync(dirname(detPath), { recursive: true });
  copyFileSync(PPOCR_DET_PATH, detPath);
  const detInput = ppocrDetSampleInput();
  rows.push(
    await measure(
      "det",
      statSync(detPath).size,
      () => ({ name: "x", datatype: "FP32", shape: [...PPOCR_DET_DIMS], data: detInput }),
      [1],
    ).then((row) => ({ ...row, model: `det (PP-OCRv4, ${PPOCR_DET_DIMS.slice(2).join("x")})` })),
  );
} finally {
  rmSync(repoDir, { recursive: true, force: true });
}

const cpu = os.cpus()[0]?.model ?? "unknown CPU";
const table = rows
  .map(
    (row) =>
      `| ${row.model} | ${(row.bytes / 1e6).toFixed(1)} MB | ${row.loadMs.toFixed(1)} ms | ${row.inferBatch1Ms.toFixed(2)} ms | ${
        row.inferBatch32Ms === undefined ? "-" : `${row.inferBatch32Ms.toFixed(2)} ms`
      } |`,
  )
  .join("\n");
const report = `# Load and inference time per model size, CPU

- Machine: ${os.availableParallelism()} cores (${cpu}), ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Node ${process.version}, onnxruntime-node ${ORT_VERSION} (CPU provider, default threads).
- Command: \`npm run bench:cpu-models\` (bench/models/cpu-load-infer.ts), ${new Date().toISOString().slice(0, 10)}.
- Through the agent's Replica: load = cold InferenceSession creation as the cache does it (median of ${LOADS}),
  inference = the replica's measured session.run (median of ${RUNS}).
- MLPs are ${MLP_SHAPE.inputDim} -> hidden -> ${MLP_SHAPE.outputDim} with hidden sized to the file size: load time tracks the bytes, and a run reads
  every weight once, so inference is memory-bound and grows with size too; PP-OCRv4 is a small file with heavy
  convolutions. Figures move with whatever else the machine runs: compare rows of one run.

| model | file | load | infer, batch 1 | infer, batch 32 |
|---|---|---|---|---|
${table}
`;
writeFileSync(new URL("../results/cpu-models.md", import.meta.url), report);
console.log(report);
