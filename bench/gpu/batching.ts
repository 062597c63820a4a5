/**
 * Throughput and latency with batching off and on, at 1, 8, 32 and 128 concurrent clients (closed loops):
 * in process through Replica.infer, and over HTTP through a real agent process. Two models: PP-OCRv4
 * detection (GPU-bound: large images) and a 256 KB MLP (every run is overhead).
 */

import type { Replica } from "../../backend/replica/replica.ts";
import { type AgentProcess, httpInferrer, startAgent } from "./agent-process.ts";
import { DET, detInput, mlpInput, SMALL_MLP } from "./bench-models.ts";
import { type BenchContext, benchReplica } from "./context.ts";
import { closedLoop, type LoadResult, round } from "./measure.ts";

const CONCURRENCY = [1, 8, 32, 128];
const MAX_BATCH = 32;

interface Mode {
  name: string;
  maxBatchSize: number;
  delayUs: number;
}

const MODES: Mode[] = [
  { name: "off", maxBatchSize: 1, delayUs: 0 },
  { name: "on", maxBatchSize: MAX_BATCH, delayUs: 0 },
  { name: "on, 2 ms delay", maxBatchSize: MAX_BATCH, delayUs: 2000 },
];

export interface BatchingCell {
  path: "in process" | "http";
  model: string;
  mode: string;
  result: LoadResult;
}

const describe = (cell: BatchingCell) =>
  `${cell.path} ${cell.model} ${cell.mode} c=${cell.result.concurrency}: ${round(cell.result.throughput, 1)}/s ` +
  `p50 ${round(cell.result.latency.p50)} p99 ${round(cell.result.latency.p99)} ms batch ${round(cell.result.meanBatch ?? Number.NaN)}` +
  (cell.result.failed > 0 ? ` FAILED ${cell.result.failed}: ${cell.result.firstError}` : "");

function inputFor(context: BenchContext, model: string) {
  return model === DET ? detInput(1, context.detSize) : mlpInput(1);
}

/**
 * Runs one request of each power-of-two batch size twice and times both runs: on CUDA the first run after
 * a change of shape rebuilds the cuDNN plans of every convolution (onnxruntime keeps only the last shape's).
 */
async function warmBatchSizes(context: BenchContext, replica: Replica, model: string, maxBatch: number) {
  const firstRunMs: number[] = [];
  const warmRunMs: number[] = [];
  const started = performance.now();
  for (let rows = 1; rows <= maxBatch; rows *= 2) {
    const input = model === DET ? detInput(rows, context.detSize) : mlpInput(rows);
    const first = await replica.infer({ model, inputs: [input] });
    firstRunMs.push(round(first.timings.inferMs, 1));
    const again = await replica.infer({ model, inputs: [input] });
    warmRunMs.push(round(again.timings.inferMs, 2));
  }
  const warmup = {
    model,
    totalMs: round(performance.now() - started, 0),
    firstRunMsByBatchSize: firstRunMs,
    warmRunMsByBatchSize: warmRunMs,
  };
  context.log(`warm-up ${JSON.stringify(warmup)}`);
  return warmup;
}

export async function batchingInProcess(context: BenchContext) {
  const cells: BatchingCell[] = [];
  const warmups: Array<Awaited<ReturnType<typeof warmBatchSizes>>> = [];
  const [warmupS, seconds] = context.quick ? [0.3, 0.7] : [1, 2.5];
  for (const model of [DET, SMALL_MLP]) {
    for (const mode of MODES.filter((each) => each.delayUs === 0)) {
      const replica = benchReplica(context, context.repoDir, {
        batching: { maxBatchSize: mode.maxBatchSize, maxQueueDelayMicroseconds: mode.delayUs },
        maxConcurrency: mode.maxBatchSize > 1 ? 2 * mode.maxBatchSize : 4,
      });
      await replica.load(model);
      const input = inputFor(context, model);
      if (mode.maxBatchSize > 1)
        warmups.push(await warmBatchSizes(context, replica, model, mode.maxBatchSize));
      for (const concurrency of CONCURRENCY) {
        const result = await closedLoop(concurrency, warmupS, seconds, async () => {
          const outcome = await replica.infer({ model, inputs: [input] });
          return outcome.batch?.requests;
        });
        const cell: BatchingCell = { path: "in process", model, mode: mode.name, result };
        context.log(describe(cell));
        cells.push(cell);
      }
      await replica.close();
    }
  }
  return { cells, warmups };
}

/** Session runs so far per model, from the agent's replica states. */
async function runsOf(agent: AgentProcess, model: string): Promise<number> {
  const { replicas: states } = (await (await fetch(`${agent.url}/v2/agent/replicas`)).json()) as {
    replicas: Array<{ timings: Record<string, { runs: number }> }>;
  };
  return states.reduce((sum, state) => sum + (state.timings[`${model}:1`]?.runs ?? 0), 0);
}

export async function batchingOverHttp(context: BenchContext): Promise<BatchingCell[]> {
  const cells: BatchingCell[] = [];
  const [warmupS, seconds] = context.quick ? [0.3, 0.7] : [1, 2.5];
  for (const mode of MODES) {
    const agent = await startAgent([
      ...context.agentDeviceArgs,
      "--models",
      context.repoDir,
      "--preload",
      `${DET},${SMALL_MLP}`,
      "--max-batch-size",
      String(mode.maxBatchSize),
      "--max-queue-delay-us",
      String(mode.delayUs),
      "--max-queue",
      "1024",
    ]);
    try {
      for (const model of [DET, SMALL_MLP]) {
        const send = httpInferrer(agent.url, model, [inputFor(context, model)]);
        // A session's first run builds its cuDNN plans (up to 2 s): not a latency any cell should report.
        await send();
        for (const concurrency of CONCURRENCY) {
          const runsBefore = await runsOf(agent, model);
          const result = await closedLoop(concurrency, warmupS, seconds, async () => {
            await send();
            return undefined;
          });
          const runs = (await runsOf(agent, model)) - runsBefore;
          result.meanBatch = runs > 0 ? result.answered / runs : Number.NaN;
          const cell: BatchingCell = { path: "http", model, mode: mode.name, result };
          context.log(describe(cell));
          cells.push(cell);
        }
      }
    } finally {
      await agent.stop();
    }
  }
  return cells;
}
