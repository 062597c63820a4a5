/**
 * `npm run bench:sim`: every policy on every scenario, the bounds, the goals, bench/results/sim.md and its
 * charts. Deterministic; takes a few minutes on two cores.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { configuredVars } from "../../scripts/lib/wrangler-dev.ts";
import { ROUTING_POLICIES } from "../../shared/routing/policies.ts";
import { boundsOf } from "./bounds.ts";
import { hitRateChart, p99VersusLoadChart } from "./charts.ts";
import { checkGoals, type PinnedResult, type ScenarioResult } from "./goals.ts";
import { renderReport } from "./report.ts";
import type { Scenario } from "./scenario.ts";
import { S6_LOADS, SCENARIOS, s6 } from "./scenarios/index.ts";
import { s1 } from "./scenarios/s1-zipf.ts";
import { CRITICAL_RANK, modelOfRank, s7 } from "./scenarios/s7-pinned.ts";
import { simulate } from "./simulate.ts";
import { buildTrace } from "./trace.ts";

/** Every policy, in the order ROUTING_POLICIES lists them: switchyard, the baseline, then the anchors. */
const POLICIES = Object.keys(ROUTING_POLICIES);
const RESULTS = join(dirname(fileURLToPath(import.meta.url)), "..", "results");

function runScenario(scenario: Scenario): ScenarioResult {
  const trace = buildTrace(scenario);
  const runs = POLICIES.map((name) => {
    const policy = ROUTING_POLICIES[name];
    if (policy === undefined) throw new Error(`no policy ${name}`);
    const started = performance.now();
    const summary = simulate(scenario, trace, policy);
    const elapsed = ((performance.now() - started) / 1000).toFixed(1);
    console.log(
      `${scenario.id.padEnd(8)} ${name.padEnd(14)} hit ${summary.hitRate.toFixed(3)} p99 ${(summary.p99 / 1000).toFixed(1)} s  (${elapsed} s)`,
    );
    return summary;
  });
  return {
    id: scenario.id,
    title: scenario.title,
    summary: scenario.summary,
    bounds: boundsOf(scenario, trace),
    runs,
  };
}

/** S7: every policy with and without a pinned copy of the critical model (SimulateOptions.policies). */
function runPinned(): PinnedResult {
  const trace = buildTrace(s7);
  const model = modelOfRank(s7, trace, CRITICAL_RANK);
  const rows = POLICIES.map((name) => {
    const policy = ROUTING_POLICIES[name];
    if (policy === undefined) throw new Error(`no policy ${name}`);
    const without = simulate(s7, trace, policy, { focus: model });
    const pinned = simulate(s7, trace, policy, { focus: model, policies: { [model]: { minCopies: 1 } } });
    console.log(
      `S7       ${name.padEnd(14)} ${model} p99 ${((without.focus?.p99 ?? 0) / 1000).toFixed(2)} s -> ${((pinned.focus?.p99 ?? 0) / 1000).toFixed(2)} s`,
    );
    return { without, pinned };
  });
  return { id: s7.id, title: s7.title, summary: s7.summary, model, rows };
}

const started = performance.now();
const results = SCENARIOS.map(runScenario);
const sweep = s6.map(runScenario);
const goals = checkGoals([...results, ...sweep], ["S1", "S2", "S3", "S4"]);
const pinned = runPinned();

mkdirSync(RESULTS, { recursive: true });
const charts = { p99VersusLoad: "sim-p99-vs-load.svg", hitRate: "sim-hit-rate.svg" };
writeFileSync(join(RESULTS, charts.p99VersusLoad), p99VersusLoadChart(sweep, S6_LOADS, POLICIES));
writeFileSync(join(RESULTS, charts.hitRate), hitRateChart(results, POLICIES));
const report = renderReport(results, sweep, goals, pinned, {
  command: "npm run bench:sim",
  machine: `${cpus().length} x ${cpus()[0]?.model ?? "unknown CPU"}`,
  node: process.versions.node,
  date: new Date().toISOString().slice(0, 10),
  elapsedSeconds: (performance.now() - started) / 1000,
  charts,
  scenarios: [...SCENARIOS, ...s6, s7],
  reference: s1,
  gatewayVars: await configuredVars(),
});
writeFileSync(join(RESULTS, "sim.md"), report);
console.log(`wrote ${join(RESULTS, "sim.md")}`);
