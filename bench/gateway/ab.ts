/**
 * A small request through two gateways at once: this checkout's and another commit's (a worktree), each
 * with its own `wrangler dev` and its own agent started from its own tree, requests alternating between the
 * two (the order flips every pair), sequential. Both run under the same load of this shared machine at the
 * same moments, which back-to-back runs of bench:gateway-overhead do not: there the machine's other work
 * moves a median by more than the difference being measured. Writes bench/results/gateway-ab.md (--out).
 *
 *   git worktree add /tmp/base <commit> && ln -s $PWD/node_modules /tmp/base/node_modules
 *   npm run bench:gateway-ab -- --base /tmp/base [--requests 1000] [--rounds 3] [--models-run N] [--out <file>]
 *
 * --models-run N: before the warm-up, each agent runs N other small models once each through its
 * gateway, so that its replica has measured N + 1 models by the time the small request is timed, as an agent
 * of a pool with many models has (the replica's state, which every result frame carries, holds their timings).
 *
 * The other tree needs test/fixtures/generated (a link to this checkout's will do) and the harness of
 * test/integration/harness/ (wrangler-dev.ts, agents.ts, oip-client.ts) as every commit since the gateway
 * existed has it.
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import os from "node:os";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { writeModelRepository } from "../../scripts/lib/model-repository.ts";
import { encodeMlp } from "../../scripts/lib/onnx-builder.ts";
import { infer } from "../../shared/oip/http-client.ts";
import { MULTIPLEX_MODELS, REPO_DIR } from "../../test/fixtures/paths.ts";
import { clientAuthorization, mlpRequest } from "../../test/integration/harness/oip-client.ts";
import { summarize } from "../gpu/measure.ts";
import { type CpuReading, cpuBetween, gatewayCpuReader } from "../registry/process-cpu.ts";

const { values } = parseArgs({
  options: {
    base: { type: "string" },
    requests: { type: "string", default: "1000" },
    rounds: { type: "string", default: "3" },
    "models-run": { type: "string", default: "0" },
    out: { type: "string", default: "bench/results/gateway-ab.md" },
  },
});
if (values.base === undefined)
  throw new Error("--base <a worktree of the commit to compare with> is required");

const MODELS_RUN = Number(values["models-run"]);
const REQUESTS = Number(values.requests);
const ROUNDS = Number(values.rounds);
const WARMUP = 100;
const model = MULTIPLEX_MODELS[0] ?? "m000";
const here = resolve(import.meta.dirname, "..", "..");

/** What this benchmark uses of a tree's test harness (the same in every commit it compares). */
interface Harness {
  startGateway(): Promise<{
    url: string;
    wsUrl: string;
    process: { child: { pid?: number } };
    stop(): Promise<void>;
  }>;
  startAgent(options: {
    gateway: string;
    name: string;
    args: string[];
    models?: string;
  }): Promise<{ stop(): Promise<void> }>;
  waitForAgents(url: string, count: number): Promise<void>;
}

interface Side {
  label: string;
  url: string;
  meter: () => CpuReading | undefined;
  stop: () => Promise<void>;
  times: number[];
  cpu: Array<{ workerMs: number; proxyMs: number }>;
}

function commitOf(dir: string): string {
  try {
    const commit = execFileSync("git", ["-C", dir, "rev-parse", "--short", "HEAD"], {
      encoding: "utf8",
    }).trim();
    const dirty = execFileSync(
      "git",
      ["-C", dir, "status", "--porcelain", "--", "gateway", "shared", "backend"],
      {
        encoding: "utf8",
      },
    ).trim();
    return dirty === "" ? commit : `${commit} + uncommitted changes`;
  } catch {
    return "unknown";
  }
}

/** The names of the models each agent runs once before the timed requests (--models-run). */
const others = Array.from({ length: MODELS_RUN }, (_, index) => `other-${String(index).padStart(4, "0")}`);

/**
 * With --models-run, the agents' repository: the timed model (a link to the fixtures') and the others, small
 * MLPs of the same input and output. Undefined without: the harness's own.
 */
function repositoryWithOthers(): string | undefined {
  if (others.length === 0) return undefined;
  const dir = mkdtempSync(join(os.tmpdir(), "gateway-ab-models-"));
  symlinkSync(join(REPO_DIR, model), join(dir, model));
  writeModelRepository(
    dir,
    others.map((name, index) => ({
      name,
      bytes: encodeMlp({ inputDim: 16, hiddenDim: 16, outputDim: 8, seed: 5000 + index, name }),
    })),
  );
  return dir;
}

const repository = repositoryWithOthers();

async function startSide(label: string, root: string): Promise<Side> {
  const load = async <T>(path: string) => (await import(resolve(root, path))) as T;
  const harness: Harness = {
    ...(await load<Pick<Harness, "startGateway">>("test/integration/harness/wrangler-dev.ts")),
    ...(await load<Pick<Harness, "startAgent">>("test/integration/harness/agents.ts")),
    ...(await load<Pick<Harness, "waitForAgents">>("test/integration/harness/oip-client.ts")),
  };
  const gateway = await harness.startGateway();
  const agent = await harness.startAgent({
    gateway: gateway.wsUrl,
    name: "bench",
    args: ["--preload", model, "--threads", "2"],
    ...(repository === undefined ? {} : { models: repository }),
  });
  await harness.waitForAgents(gateway.url, 1);
  return {
    label: `${label} (${commitOf(root)})`,
    url: gateway.url,
    meter: gatewayCpuReader(gateway),
    stop: async () => {
      await agent.stop();
      await gateway.stop();
    },
    times: [],
    cpu: [],
  };
}

const sides = [await startSide("base", resolve(values.base)), await startSide("this checkout", here)];
const started = Date.now();
try {
  const send = (side: Side, name = model) =>
    infer(side.url, name, mlpRequest(1), { headers: clientAuthorization });
  for (const name of others) for (const side of sides) await send(side, name);
  if (others.length > 0) console.error(`[gateway-ab] each agent ran ${others.length} other models`);
  for (let index = 0; index < WARMUP; index += 1) for (const side of sides) await send(side);
  for (let round = 0; round < ROUNDS; round += 1) {
    const before = sides.map((side) => side.meter());
    for (let index = 0; index < REQUESTS; index += 1) {
      for (const side of index % 2 === 0 ? sides : [...sides].reverse()) {
        const sent = performance.now();
        await send(side);
        side.times.push(performance.now() - sent);
      }
    }
    sides.forEach((side, at) => {
      const after = side.meter();
      const from = before[at];
      if (from === undefined || after === undefined) return;
      const { workerMs, proxyMs } = cpuBetween(from, after);
      side.cpu.push({ workerMs: workerMs / REQUESTS, proxyMs: proxyMs / REQUESTS });
    });
    console.error(`[gateway-ab] round ${round + 1} of ${ROUNDS} done`);
  }
} finally {
  for (const side of sides) await side.stop();
  if (repository !== undefined) rmSync(repository, { recursive: true, force: true });
}

const rows = sides.map((side) => {
  const { p50, p90, p99, mean } = summarize(side.times);
  const cpu = (pick: (cpu: { workerMs: number; proxyMs: number }) => number) =>
    side.cpu.map((round) => pick(round).toFixed(2)).join(", ");
  return `| ${side.label} | ${p50.toFixed(2)} | ${p90.toFixed(2)} | ${p99.toFixed(2)} | ${mean.toFixed(2)} | ${cpu((round) => round.workerMs)} (median ${summarize(side.cpu.map((round) => round.workerMs)).p50.toFixed(2)}) | ${cpu((round) => round.proxyMs)} |`;
});
const report = `# A small request through two gateways at once

- Machine: ${os.availableParallelism()} cores (${os.cpus()[0]?.model ?? "unknown"}), Node ${process.version}; each gateway in its own
  \`wrangler dev\` (workerd, local Durable Objects) on loopback, with its own CPU agent (\`--threads 2\`) from its own tree.
- Command: \`npm run bench:gateway-ab -- ${process.argv.slice(2).join(" ")}\` (bench/gateway/ab.ts), ${new Date().toISOString().slice(0, 10)}, ${Math.round((Date.now() - started) / 1000)} s.
- ${ROUNDS} rounds of ${REQUESTS} pairs after ${WARMUP} warm-up pairs: sequential requests (MLP ${model}, batch 1, JSON), alternating
  between the two gateways, the order flipping every pair; latency at the client over all rounds.${
    others.length === 0
      ? ""
      : `\n- Before the warm-up each agent (\`--max-models 3\`, its default) ran ${others.length} other small models once each, through its
  gateway: its replica had measured ${others.length + 1} models when the timed requests began.`
  }
- workerd CPU: user + system time of the workerd that runs the Worker and its Durable Objects (the registry, the
  relays), per request, each round; and of wrangler's local proxy in front of it.

| gateway | p50 (ms) | p90 | p99 | mean | workerd CPU per request, each round (ms) | proxy CPU per request (ms) |
| --- | --- | --- | --- | --- | --- | --- |
${rows.join("\n")}
`;
writeFileSync(resolve(here, values.out), report);
console.log(report);
