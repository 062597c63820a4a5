/**
 * Runs the real agent CLI on a GPU with --device cuda and checks, on PP-OCRv4 detection, that it serves the
 * same outputs as onnxruntime on the CPU, and how fast. Usage (on the GPU host, from the repo root):
 *   node dist/gpu-smoke.mjs <models dir holding det/1/model.onnx> [out.json]
 */
import { type ChildProcess, spawn } from "node:child_process";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { infer } from "../../shared/oip/http-client.ts";

const [modelsDir = ".gpu-models", outFile] = process.argv.slice(2);
const agentBin = join(import.meta.dirname, "switchyard-agent.mjs");
const dims = [1, 3, 640, 640];
const input = Float32Array.from({ length: 3 * 640 * 640 }, (_, index) => Math.sin(index / 977) * 0.8);

function startAgent(args: string[]): Promise<{ child: ChildProcess; url: string; log: () => string }> {
  const child = spawn(
    process.execPath,
    [agentBin, "--standalone", "--port", "0", "--models", modelsDir, ...args],
    {
      stdio: ["ignore", "inherit", "pipe"],
    },
  );
  let log = "";
  return new Promise((resolve, reject) => {
    child.stderr?.setEncoding("utf8");
    child.stderr?.on("data", (chunk: string) => {
      log += chunk;
      process.stderr.write(chunk);
      const url = /listening url=(\S+)/.exec(log)?.[1];
      if (url !== undefined && log.includes("agent ready")) resolve({ child, url, log: () => log });
    });
    child.once("exit", (code) => reject(new Error(`agent exited with ${code}: ${log}`)));
  });
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

async function timedRuns(url: string, count: number) {
  const latencies: number[] = [];
  const inferMs: number[] = [];
  let output: Float32Array | undefined;
  for (let run = 0; run < count; run += 1) {
    const started = performance.now();
    const result = await infer(
      url,
      "det",
      { inputs: [{ name: "x", datatype: "FP32", shape: dims, data: input }] },
      { binaryInputs: true, binaryOutputs: true },
    );
    latencies.push(performance.now() - started);
    const timing = /infer;dur=([\d.]+)/.exec(result.headers.get("server-timing") ?? "")?.[1];
    inferMs.push(Number(timing));
    output = result.response.outputs[0]?.data as Float32Array;
  }
  return {
    output,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    inferP50: percentile(inferMs, 50),
  };
}

const report: Record<string, unknown> = { node: process.version };

// Reference: onnxruntime on the CPU, in this process.
const cpu = await ort.InferenceSession.create(join(modelsDir, "det", "1", "model.onnx"));
const reference = (
  Object.values(await cpu.run({ x: new ort.Tensor("float32", input, dims) }))[0] as ort.Tensor
).data as Float32Array;
await cpu.release();

// A GPU id that does not exist must stop the agent with a clear message.
const refused = await startAgent(["--device", "cuda", "--gpus", "0,97"]).then(
  (agent) => {
    agent.child.kill("SIGKILL");
    return "started (unexpected)";
  },
  (error: Error) => error.message.split("\n").find((line) => line.includes("CUDA")) ?? error.message,
);
report.refusedWithMissingGpu = refused;

const agent = await startAgent(["--device", "cuda", "--gpus", "0", "--preload", "det"]);
const warm = await timedRuns(agent.url, 5);
const measured = await timedRuns(agent.url, 100);
let maxDifference = 0;
for (let index = 0; index < reference.length; index += 1) {
  maxDifference = Math.max(
    maxDifference,
    Math.abs((measured.output?.[index] ?? Number.NaN) - (reference[index] ?? 0)),
  );
}
const replicas = await (await fetch(`${agent.url}/v2/agent/replicas`)).json();
agent.child.kill("SIGTERM");

Object.assign(report, {
  warmupP50Ms: warm.p50,
  clientP50Ms: measured.p50,
  clientP99Ms: measured.p99,
  agentInferP50Ms: measured.inferP50,
  maxAbsDifferenceVsCpu: maxDifference,
  replicas,
});
console.log(JSON.stringify(report, null, 2));
if (outFile !== undefined) writeFileSync(outFile, JSON.stringify(report, null, 2));
