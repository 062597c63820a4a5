/**
 * One replica per GPU, shown where there are two (issue 17): one agent started with `--gpus 0,1` against one
 * started with `--gpus 0`, in the same run, PP-OCRv4 detection over HTTP (binary tensors) at 16 and 64
 * clients; where each replica's models live (the agent's own replica states and nvidia-smi's memory per GPU);
 * and whether every GPU returns to its starting memory once everything is unloaded.
 *
 *   npm run bench:two-gpus -- --gpus 0,1                      a checkout on a host with two GPUs
 *   node dist/two-gpus.mjs --gpus 0,1 --out $OUT              the bundle (npm run build:bundles)
 *   npm run bench:two-gpus -- --device cpu                    the same on the CPU: two replicas against one
 *
 * Options: --gpus <ids> (the replicas of the larger agent, one per entry; the smaller one gets the first),
 * --device cuda|cpu, --models <dir holding det/1/model.onnx> (default PP-OCRv4 from node_modules),
 * --seconds <measured per cell> (10), --clients 16,64, --out <dir> (bench/results). Writes two-gpus.md and
 * two-gpus.json there. With --device cpu the replicas split the machine's cores (--threads cores / replicas).
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { gpuUsedMemory } from "../../backend/replica/gpu-memory.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import { type AgentProcess, httpInferrer, startAgent } from "./agent-process.ts";
import { DET, detInput, writeBenchRepository } from "./bench-models.ts";
import { closedLoop, type LoadResult, MiB, round, sleep } from "./measure.ts";

const { values } = parseArgs({
  options: {
    gpus: { type: "string", default: "0,1" },
    device: { type: "string", default: "cuda" },
    models: { type: "string" },
    seconds: { type: "string", default: "10" },
    clients: { type: "string", default: "16,64" },
    out: { type: "string", default: "bench/results" },
  },
});

const cuda = values.device !== "cpu";
const gpus = values.gpus.split(",").map((id) => Number(id.trim()));
const seconds = Number(values.seconds);
const clientCounts = values.clients.split(",").map(Number);
const DET_SIZE = 640;
const log = (line: string) => console.error(`[two-gpus] ${line}`);

/** Memory in use on each GPU of `gpus` (MiB), as nvidia-smi reads it; empty on the CPU. */
async function gpuMemory(): Promise<Record<string, number>> {
  if (!cuda) return {};
  const used: Record<string, number> = {};
  for (const id of new Set(gpus)) used[id] = round(((await gpuUsedMemory(id)) ?? Number.NaN) / MiB, 0);
  return used;
}

/** nvidia-smi's compute processes: which GPU holds how much of which process (MiB). */
function computeApps(): string {
  if (!cuda) return "";
  try {
    return execFileSync(
      "nvidia-smi",
      ["--query-compute-apps=gpu_bus_id,pid,used_memory", "--format=csv,noheader"],
      { encoding: "utf8" },
    ).trim();
  } catch (error) {
    return `nvidia-smi failed: ${(error as Error).message}`;
  }
}

async function replicas(agent: AgentProcess): Promise<ReplicaState[]> {
  const response = await fetch(`${agent.url}/v2/agent/replicas`);
  return ((await response.json()) as { replicas: ReplicaState[] }).replicas;
}

/** What a replica holds, for the report: its device, budget and loaded models. */
const describeReplicas = (states: ReplicaState[]) =>
  states.map((state) => ({
    id: state.id,
    device: state.device,
    memoryBudgetMiB: round(state.memoryBudgetBytes / MiB, 0),
    memoryUsedMiB: round(state.memoryUsedBytes / MiB, 0),
    loaded: state.loaded.map((model) => model.name),
  }));

function agentArgs(replicaCount: number): string[] {
  if (cuda) return ["--device", "cuda", "--gpus", gpus.slice(0, replicaCount).join(",")];
  const threads = Math.max(1, Math.floor(os.availableParallelism() / replicaCount));
  return ["--device", "cpu", "--replicas", String(replicaCount), "--threads", String(threads)];
}

interface AgentRun {
  replicas: number;
  args: string[];
  memoryAfterStart: Record<string, number>;
  memoryLoaded: Record<string, number>;
  memoryUnloaded: Record<string, number>;
  computeAppsLoaded: string;
  states: ReturnType<typeof describeReplicas>;
  /** What each replica still holds once det was unloaded (nothing, when unloading works). */
  loadedAfterUnload: string[][];
  loads: LoadResult[];
}

async function measureAgent(repoDir: string, replicaCount: number): Promise<AgentRun> {
  const args = agentArgs(replicaCount);
  log(`starting switchyard-agent ${args.join(" ")}`);
  const agent = await startAgent([...args, "--models", repoDir, "--max-concurrency", "8"]);
  try {
    const memoryAfterStart = await gpuMemory();
    // det on every replica (an OIP load with copies): the figures are the devices', not the router's choice.
    const loaded = await fetch(`${agent.url}/v2/repository/models/${DET}/load`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ parameters: { copies: replicaCount } }),
    });
    if (!loaded.ok) throw new Error(`load answered ${loaded.status}: ${await loaded.text()}`);
    const send = httpInferrer(agent.url, DET, [detInput(1, DET_SIZE)]);
    const loads: LoadResult[] = [];
    for (const clients of clientCounts) {
      const load = await closedLoop(clients, 3, seconds, async () => {
        await send();
        return undefined;
      });
      log(`${replicaCount} replica(s), ${clients} clients: ${round(load.throughput, 1)} req/s`);
      loads.push(load);
    }
    const states = describeReplicas(await replicas(agent));
    const memoryLoaded = await gpuMemory();
    const computeAppsLoaded = computeApps();
    const unloaded = await fetch(`${agent.url}/v2/repository/models/${DET}/unload`, { method: "POST" });
    if (!unloaded.ok) throw new Error(`unload answered ${unloaded.status}: ${await unloaded.text()}`);
    // Sessions free their device memory as they are released; give the driver a moment to show it.
    await sleep(2_000);
    const memoryUnloaded = await gpuMemory();
    const loadedAfterUnload = describeReplicas(await replicas(agent)).map((state) => state.loaded);
    return {
      replicas: replicaCount,
      args,
      memoryAfterStart,
      memoryLoaded,
      memoryUnloaded,
      computeAppsLoaded,
      states,
      loadedAfterUnload,
      loads,
    };
  } finally {
    await agent.stop();
  }
}

function render(runs: AgentRun[], started: number): string {
  const [one, two] = runs;
  const gpuLine = cuda
    ? execFileSync("nvidia-smi", ["--query-gpu=index,name,memory.total", "--format=csv,noheader"], {
        encoding: "utf8",
      })
        .trim()
        .split("\n")
        .join("; ")
    : "none (--device cpu)";
  const rows = clientCounts.map((clients, index) => {
    const a = one?.loads[index];
    const b = two?.loads[index];
    const ratio = a !== undefined && b !== undefined ? round(b.throughput / a.throughput, 2) : Number.NaN;
    const cell = (load: LoadResult | undefined) =>
      load === undefined
        ? "–"
        : `${round(load.throughput, 1)} · ${round(load.latency.p50, 1)} · ${round(load.latency.p99, 1)}${load.failed > 0 ? ` (${load.failed} failed)` : ""}`;
    return `| ${clients} | ${cell(a)} | ${cell(b)} | ${ratio}x |`;
  });
  const memoryRows = runs.map(
    (run) =>
      `| ${run.replicas} | ${JSON.stringify(run.memoryAfterStart)} | ${JSON.stringify(run.memoryLoaded)} | ${JSON.stringify(run.memoryUnloaded)} | ${run.loadedAfterUnload.map((models) => models.join(", ") || "nothing").join(" / ")} |`,
  );
  const stateRows = runs.flatMap((run) =>
    run.states.map(
      (state) =>
        `| ${run.replicas} | ${state.id} | ${state.device} | ${state.memoryBudgetMiB} | ${state.memoryUsedMiB} | ${state.loaded.join(", ") || "–"} |`,
    ),
  );
  const command = `npm run bench:two-gpus -- ${process.argv.slice(2).join(" ")}`.trim();
  return `# One replica per GPU: ${two?.replicas ?? "?"} replicas against ${one?.replicas ?? "?"}

- Command: \`${command}\` (bench/gpu/two-gpus.ts), ${new Date().toISOString().slice(0, 10)}, ${Math.round((Date.now() - started) / 1000)} s.
- Machine: ${os.availableParallelism()} x ${os.cpus()[0]?.model ?? "unknown"}, ${Math.round(os.totalmem() / 2 ** 30)} GiB; GPUs: ${gpuLine}; Node ${process.version}.
- Load: PP-OCRv4 detection, 1x3x${DET_SIZE}x${DET_SIZE} FP32, binary tensors both ways, closed loop over HTTP to the standalone agent, ${seconds} s measured per cell after 3 s of warm-up, det loaded on every replica first (an OIP load with \`copies\`). Agent flags: ${runs.map((run) => `\`${run.args.join(" ")}\``).join(" and ")} (and \`--models\`, \`--max-concurrency 8\`).

## Throughput: req/s · p50 · p99 (ms)

| clients | ${one?.replicas ?? "?"} replica(s) | ${two?.replicas ?? "?"} replicas | ratio |
| --- | --- | --- | --- |
${rows.join("\n")}

## Where the models are (the agent's replica states after the load)

| agent | replica | device | budget (MiB) | models (MiB) | loaded |
| --- | --- | --- | --- | --- | --- |
${stateRows.join("\n")}

## Device memory per GPU (MiB, nvidia-smi, by GPU id): after start, loaded, after unloading everything

| agent | after start | loaded | unloaded | replicas hold after unloading |
| --- | --- | --- | --- | --- |
${memoryRows.join("\n")}

nvidia-smi's compute processes with det loaded (bus id, pid, memory):

\`\`\`
${runs.map((run) => `${run.replicas} replica(s):\n${run.computeAppsLoaded || "(CPU)"}`).join("\n")}
\`\`\`
`;
}

async function main(): Promise<void> {
  const started = Date.now();
  const work = mkdtempSync(join(os.tmpdir(), "switchyard-two-gpus-"));
  const repoDir = join(work, "repo");
  const detPath =
    values.models === undefined
      ? (await import("../../test/fixtures/ppocr.ts")).PPOCR_DET_PATH
      : resolve(values.models, "det", "1", "model.onnx");
  writeBenchRepository(repoDir, detPath);
  const runs = [await measureAgent(repoDir, 1), await measureAgent(repoDir, cuda ? gpus.length : 2)];
  const outDir = resolve(values.out);
  mkdirSync(outDir, { recursive: true });
  writeFileSync(join(outDir, "two-gpus.json"), `${JSON.stringify(runs, null, 2)}\n`);
  const report = render(runs, started);
  writeFileSync(join(outDir, "two-gpus.md"), report);
  console.log(report);
}

await main();
