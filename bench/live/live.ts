/**
 * The live routing benchmark (`npm run bench:live`): a real gateway (`wrangler dev`) and four real agents on
 * the CPU (one replica each: 4 slots, 3 models), 40 generated models whose loads take a few hundred
 * milliseconds, and a client replaying the simulator's S1 trace scaled to this machine. Every policy runs
 * the same trace on a fresh gateway and cold agents, one after the other; the simulator then runs the same
 * scaled scenario and trace, so bench/results/live.md sets what happened beside what the simulator
 * predicted.
 *
 *   npm run bench:live -- [--requests 3000] [--model-mb 64] [--load 0.8] [--policies switchyard,baseline,...]
 *                         [--calibrate-seconds 8] [--deadline-seconds <default: S1's 60 s scaled>]
 *                         [--calibration <load ms>:<hit-only req/s>]
 *
 * --calibration replays with a calibration measured before instead of measuring one: two commits (or two
 * runs) then replay the same arrival rate and deadline, which a change to the hit path's speed would
 * otherwise move (the calibration measures the gateway under test).
 */
import { writeFileSync } from "node:fs";
import { cpus, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { freePort } from "../../scripts/lib/free-port.ts";
import { ROUTING_POLICIES } from "../../shared/routing/policies.ts";
import { type AgentProcess, startAgent } from "../../test/integration/harness/agents.ts";
import { waitForAgents } from "../../test/integration/harness/oip-client.ts";
import {
  type GatewayProcess,
  REPO_ROOT,
  SECRETS,
  startGateway,
} from "../../test/integration/harness/wrangler-dev.ts";
import { agentsFlag, gatewaySetting } from "../run-setup.ts";
import { boundsOf } from "../sim/bounds.ts";
import { summarise } from "../sim/metrics.ts";
import { type Scenario, uniformCatalogue } from "../sim/scenario.ts";
import { s1 } from "../sim/scenarios/s1-zipf.ts";
import { simulate } from "../sim/simulate.ts";
import { buildTrace } from "../sim/trace.ts";
import { type Calibration, calibrate } from "./calibrate.ts";
import { writeCatalogue } from "./catalogue.ts";
import { replay } from "./replay.ts";
import {
  arrivalsName,
  type LiveRun,
  liveReport,
  meanLoadMs,
  type PoolSetup,
  scenarioShape,
} from "./report.ts";

/** Every policy, in the order ROUTING_POLICIES lists them: switchyard, the baseline, then the anchors. */
const ALL_POLICIES = Object.keys(ROUTING_POLICIES);

const { values } = parseArgs({
  options: {
    requests: { type: "string", default: "3000" },
    "model-mb": { type: "string", default: "64" },
    load: { type: "string", default: String(s1.loadFraction) },
    policies: { type: "string", default: ALL_POLICIES.join(",") },
    "calibrate-seconds": { type: "string", default: "8" },
    "deadline-seconds": { type: "string" },
    calibration: { type: "string" },
    out: { type: "string", default: join(REPO_ROOT, "bench", "results", "live.md") },
  },
});
const policies = values.policies.split(",").map((name) => name.trim());
for (const name of policies)
  if (ROUTING_POLICIES[name] === undefined) throw new Error(`unknown policy ${name}`);

/** S1's pool: 4 replicas x 4 slots x 3 models; one agent per replica, as the simulator has it. */
const AGENTS = s1.replicas;
const agentArgs = [
  ["--max-models", String(s1.maxModels)],
  ["--max-concurrency", String(s1.concurrency)],
  ["--max-model-memory", "8GiB"],
].flat();

const say = (message: string) => process.stderr.write(`[live] ${message}\n`);
const started = performance.now();

const catalogue = uniformCatalogue(s1.models.length, { bytes: 0, loadMs: { min: 0, max: 0 }, inferMs: 0 });
say(`writing ${catalogue.length} models of ${values["model-mb"]} MB (once; kept in bench/live/.models)`);
const repository = writeCatalogue(catalogue, Number(values["model-mb"]));

const calibration =
  values.calibration === undefined
    ? await withPool("switchyard", { preload: true }, async ({ gateway }) => {
        say("calibrating: hit-only throughput and load time");
        return calibrate({
          gatewayUrl: gateway.url,
          apiKey: SECRETS.apiKey,
          hotModels: catalogue.slice(0, AGENTS).map((model) => model.name),
          coldModels: catalogue.slice(AGENTS, AGENTS * 3).map((model) => model.name),
          slots: AGENTS * s1.concurrency,
          seconds: Number(values["calibrate-seconds"]),
        });
      })
    : givenCalibration(values.calibration);
say(
  `load ${calibration.loadMs.toFixed(0)} ms, hit-only ${calibration.hitOnlyPerSecond.toFixed(0)} req/s (slot time ${calibration.slotMs.toFixed(1)} ms)`,
);

const scenario = scaledS1(calibration);
const trace = buildTrace(scenario);
say(
  `scenario: ${scenario.requests} requests at ${(scenario.loadFraction * calibration.hitOnlyPerSecond).toFixed(0)} req/s, deadline ${scenario.deadlineMs / 1000} s`,
);

const runs: LiveRun[] = [];
const setups: PoolSetup[] = [];
for (const name of policies) {
  const run = await withPool(name, { preload: false }, async ({ gateway, agents, metricsPorts }) => {
    // The policy the gateway ran with, which names the run.
    const ran = gatewaySetting(gateway, "ROUTING_POLICY");
    setups.push(poolSetup(gateway, agents));
    say(`${ran}: replaying`);
    const replayed = await replay(scenario, trace, {
      gatewayUrl: gateway.url,
      apiKey: SECRETS.apiKey,
      requests: scenario.requests,
    });
    const loads = await scrapeLoads(metricsPorts);
    replayed.record.loads = loads.count;
    replayed.record.loadMs = loads.seconds * 1000;
    return {
      live: summarise(ran, replayed.record),
      errors: replayed.errors,
      firstError: replayed.firstError,
      sendLagP99Ms: replayed.sendLagP99Ms,
    };
  });
  const policy = ROUTING_POLICIES[name];
  if (policy === undefined) throw new Error(`unknown policy ${name}`);
  const predicted = simulate(scenario, trace, policy);
  say(
    `${name}: live hit ${run.live.hitRate.toFixed(3)} p50 ${run.live.p50.toFixed(0)} ms p99 ${run.live.p99.toFixed(0)} ms | sim hit ${predicted.hitRate.toFixed(3)} p99 ${predicted.p99.toFixed(0)} ms`,
  );
  runs.push({ ...run, sim: predicted });
}

const report = liveReport({
  scenario,
  reference: s1,
  setups,
  cores: cpus().length,
  calibration,
  runs,
  bounds: boundsOf(scenario, trace),
  modelMegabytes: Number(values["model-mb"]),
  command: `npm run bench:live${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(" ")}` : ""}`,
  machine: `${cpus().length} x ${cpus()[0]?.model ?? "unknown CPU"}, ${(totalmem() / 2 ** 30).toFixed(0)} GiB`,
  node: process.versions.node,
  date: new Date().toISOString().slice(0, 10),
  elapsedSeconds: (performance.now() - started) / 1000,
});
writeFileSync(values.out, report);
process.stdout.write(report);
say(`wrote ${values.out}`);

/**
 * S1 on this machine: the same pool, catalogue size, popularity, arrival process and load fraction; the
 * times are this machine's (measured load time +-20%, the slot time at the measured hit-only throughput),
 * and the deadline is S1's 60 s scaled like the load time (2 s in S1), unless given.
 */
function scaledS1(measured: Calibration): Scenario {
  const scale = measured.loadMs / meanLoadMs(s1);
  const deadlineSeconds =
    values["deadline-seconds"] === undefined
      ? Math.max(5, Math.round((s1.deadlineMs / 1000) * scale))
      : Number(values["deadline-seconds"]);
  return {
    ...s1,
    id: "S1-live",
    title: "S1 scaled to this machine",
    summary: `${scenarioShape(s1, AGENTS)}; ${s1.models.length} models of ${values["model-mb"]} MB; Zipf ${s1.popularity.zipfExponent}; ${arrivalsName(s1)}`,
    models: uniformCatalogue(s1.models.length, {
      bytes: Number(values["model-mb"]) * 1e6,
      loadMs: { min: measured.loadMs * 0.8, max: measured.loadMs * 1.2 },
      inferMs: measured.slotMs,
    }),
    loadFraction: Number(values.load),
    requests: Number(values.requests),
    deadlineMs: deadlineSeconds * 1000,
  };
}

/** A fresh gateway with `policy` and four cold agents (or each with one model preloaded); torn down after. */
async function withPool<T>(
  policy: string,
  options: { preload: boolean },
  body: (pool: { gateway: GatewayProcess; agents: AgentProcess[]; metricsPorts: number[] }) => Promise<T>,
): Promise<T> {
  const gateway = await startGateway({ vars: { ROUTING_POLICY: policy } });
  const agents: AgentProcess[] = [];
  try {
    const metricsPorts = await Promise.all(Array.from({ length: AGENTS }, () => freePort()));
    agents.push(
      ...(await Promise.all(
        metricsPorts.map((port, index) =>
          startAgent({
            gateway: gateway.wsUrl,
            name: `agent-${index}`,
            models: repository,
            args: [
              ...agentArgs,
              ["--metrics-port", String(port)],
              options.preload ? ["--preload", catalogue[index]?.name ?? ""] : [],
            ].flat(),
          }),
        ),
      )),
    );
    await waitForAgents(gateway.url, AGENTS);
    return await body({ gateway, agents, metricsPorts });
  } finally {
    await Promise.all(agents.map((agent) => agent.stop("SIGKILL")));
    await gateway.stop();
  }
}

/** The pool as it ran, for the report: the gateway's queue limit and the agents' flags. */
function poolSetup(gateway: GatewayProcess, agents: readonly AgentProcess[]): PoolSetup {
  return {
    agents: agents.length,
    queueLimit: gatewaySetting(gateway, "QUEUE_LIMIT"),
    slots: agentsFlag(agents, "--max-concurrency"),
    maxModels: agentsFlag(agents, "--max-models"),
    threads: agentsFlag(agents, "--threads"),
  };
}

/** Loads the agents finished and the time they took, from their Prometheus metrics. */
async function scrapeLoads(ports: readonly number[]): Promise<{ count: number; seconds: number }> {
  let count = 0;
  let seconds = 0;
  for (const port of ports) {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    count += sumOf(text, "switchyard_agent_model_load_duration_seconds_count");
    seconds += sumOf(text, "switchyard_agent_model_load_duration_seconds_sum");
  }
  return { count, seconds };
}

function sumOf(text: string, metric: string): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(metric)) continue;
    const rest = line.slice(metric.length);
    if (rest[0] !== " " && rest[0] !== "{") continue;
    sum += Number(line.slice(line.lastIndexOf(" ") + 1));
  }
  return sum;
}

/** A calibration given as "<load ms>:<hit-only req/s>" (--calibration), as a previous run reported it. */
function givenCalibration(given: string): Calibration {
  const [loadMs, hitOnlyPerSecond] = given.split(":").map(Number);
  if (loadMs === undefined || hitOnlyPerSecond === undefined || !(loadMs > 0) || !(hitOnlyPerSecond > 0)) {
    throw new Error(`--calibration wants <load ms>:<hit-only req/s>, got ${JSON.stringify(given)}`);
  }
  const slots = AGENTS * s1.concurrency;
  return {
    loadMs,
    loads: 0,
    hitOnlyPerSecond,
    slotMs: (slots * 1000) / hitOnlyPerSecond,
    slots,
    hotModels: AGENTS,
  };
}
