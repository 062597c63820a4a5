/**
 * What a replica adds to a model's run on the CPU: p50 of Replica.infer against p50 of a bare
 * onnxruntime session.run on the same model, file and input, interleaved so both see the same machine load;
 * and what it adds to a small model's load (replica.load against a bare InferenceSession.create).
 * Not a test (timings on a shared machine are no assertion): run it by hand.
 *
 *   npx node bench/models/replica-overhead.ts [mlp runs, default 400] [det runs, default 100] [cpu|cuda]
 *
 * On a GPU host, bundled (it imports nothing that needs an npm install there but onnxruntime-node):
 *   npx esbuild bench/models/replica-overhead.ts --bundle --platform=node --format=esm \
 *     --external:onnxruntime-node --outfile=dist/replica-overhead.mjs
 */
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { openRepository } from "../../backend/models/open-repository.ts";
import type { ReplicaDevice } from "../../backend/replica/device.ts";
import { Replica } from "../../backend/replica/replica.ts";
import { sessionOptions } from "../../backend/replica/session-options.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { seededFloats } from "../../test/fixtures/onnx-builder.ts";
import { DET_MODEL, MULTIPLEX_MODELS, REPO_DIR, repoModelPath } from "../../test/fixtures/paths.ts";

interface Case {
  model: string;
  input: Tensor;
  runs: number;
}

const mlpRuns = Number(process.argv[2] ?? 400);
const detRuns = Number(process.argv[3] ?? 100);
const device: ReplicaDevice = process.argv[4] === "cuda" ? { kind: "cuda", deviceId: 0 } : { kind: "cpu" };
// What the replica gives its sessions (one thread on the CPU), for the bare sessions too.
const options = sessionOptions(device, { intraOpThreads: 1 });
// PP-OCRv4 detection's input (test/fixtures/ppocr.ts: 1x3x640x640); its values do not change the run time.
const DET_DIMS = [1, 3, 640, 640];
const cases: Case[] = [
  {
    model: MULTIPLEX_MODELS[0] ?? "m000",
    input: { name: "x", datatype: "FP32", shape: [1, 16], data: seededFloats(1, 16) },
    runs: mlpRuns,
  },
  {
    model: DET_MODEL,
    input: { name: "x", datatype: "FP32", shape: DET_DIMS, data: seededFloats(2, 3 * 640 * 640) },
    runs: detRuns,
  },
];

const quantile = (values: number[], q: number) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN;
};

const replica = new Replica({
  id: "0",
  device,
  repository: openRepository(REPO_DIR, { cacheDir: mkdtempSync(join(tmpdir(), "switchyard-cache-")) }),
  maxModels: 4,
  maxModelBytes: 2 ** 30,
  keepAliveMs: 0,
  maxConcurrency: 1,
  intraOpThreads: 1,
});

for (const { model, input, runs } of cases) {
  const session = await ort.InferenceSession.create(repoModelPath(model), options);
  const feeds = { [input.name]: new ort.Tensor("float32", input.data as Float32Array, input.shape) };
  await replica.load(model);
  const raw: number[] = [];
  const infer: number[] = [];
  const handedOver: number[] = [];
  const warmup = Math.min(20, Math.ceil(runs / 5));
  for (let index = 0; index < warmup + runs; index += 1) {
    let started = performance.now();
    await session.run(feeds);
    const rawMs = performance.now() - started;
    started = performance.now();
    await replica.infer({ model, inputs: [input] });
    const inferMs = performance.now() - started;
    // As a server calls it: inputs decoded for this request alone (made before the clock starts), handed over.
    const fresh: Tensor = { ...input, data: (input.data as Float32Array).slice() };
    started = performance.now();
    await replica.infer({ model, inputs: [fresh], handOverInputs: true });
    const handedOverMs = performance.now() - started;
    if (index < warmup) continue;
    raw.push(rawMs);
    infer.push(inferMs);
    handedOver.push(handedOverMs);
  }
  await session.release();
  const p50 = (values: number[]) => quantile(values, 0.5).toFixed(3);
  // Each infer ran right after its raw run: their difference cancels most of the machine's drift.
  const overhead = (values: number[]) => p50(values.map((ms, index) => ms - (raw[index] ?? 0)));
  console.log(
    `${model} (${runs} runs, p50 ms): session.run ${p50(raw)}, Replica.infer ${p50(infer)} ` +
      `(+${overhead(infer)} paired), with handOverInputs ${p50(handedOver)} (+${overhead(handedOver)} paired)`,
  );
}
// Loads: the eight small MLPs, each loaded by the replica and created bare, in turn, twice over; a pause
// before each (requests for new models rarely come back to back) lets the replica start a spare worker.
const bareLoads: number[] = [];
const replicaLoads: number[] = [];
for (let round = 0; round < 2; round += 1) {
  for (const model of MULTIPLEX_MODELS) {
    await new Promise((resolve) => setTimeout(resolve, 500));
    let started = performance.now();
    const session = await ort.InferenceSession.create(repoModelPath(model), options);
    bareLoads.push(performance.now() - started);
    await session.release();
    started = performance.now();
    await replica.load(model);
    replicaLoads.push(performance.now() - started);
    await replica.unload(model);
  }
}
console.log(
  `small model loads: ${bareLoads.length}, InferenceSession.create p50 ${quantile(bareLoads, 0.5).toFixed(1)} ms, ` +
    `Replica.load p50 ${quantile(replicaLoads, 0.5).toFixed(1)} ms`,
);
await replica.close();
