/**
 * The chaos benchmark (`npm run bench:chaos`): a real gateway (`wrangler dev`), three real agents on the
 * CPU, and a client sending a steady load for 60 s while one agent is killed with SIGKILL every 10 s (and
 * started again at once), and the pool's registry is restarted once. Every response is checked. Then an
 * overload phase (overload.ts): a burst of ten times capacity against a small queue. Writes
 * bench/results/chaos.md, or chaos-<n>-shards.md for a pool of `--shards n` registry shards.
 *
 *   npm run bench:chaos -- [--seconds 60] [--rate 20] [--rows 32] [--kill-every 10] [--registry-restart-at 35]
 *                          [--burst-seconds 5] [--bursts 4] [--queue-limit 20] [--shards 1] [--skip-overload]
 *                          [--skip-chaos]
 */
import { writeFileSync } from "node:fs";
import { availableParallelism, cpus, totalmem } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { ensureStandardRepository } from "../../test/fixtures/global-setup.ts";
import { MULTIPLEX_MODELS, MULTIPLEX_OPTIONS } from "../../test/fixtures/paths.ts";
import { type AgentProcess, startAgent } from "../../test/integration/harness/agents.ts";
import { REPO_ROOT, SECRETS, startGateway } from "../../test/integration/harness/wrangler-dev.ts";
import { agentsFlag, describeGateway } from "../run-setup.ts";
import { chaosFigures, chaosMarkdown } from "./chaos-report.ts";
import { RESTARTED_POOL, runFaults } from "./fault-schedule.ts";
import { overloadMarkdown, runOverload } from "./overload.ts";
import { FEATURES, LOST_AFTER_EXTRA_SECONDS, runSteadyLoad } from "./steady-load.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "60" },
    rate: { type: "string", default: "20" },
    rows: { type: "string", default: "32" },
    "kill-every": { type: "string", default: "10" },
    "registry-restart-at": { type: "string", default: "35" },
    "burst-seconds": { type: "string", default: "5" },
    "queue-limit": { type: "string", default: "20" },
    "skip-overload": { type: "boolean", default: false },
    "skip-chaos": { type: "boolean", default: false },
    bursts: { type: "string", default: "4" },
    shards: { type: "string", default: "1" },
    out: { type: "string" },
  },
});
const shards = Number(values.shards);
const out =
  values.out ?? join(REPO_ROOT, "bench", "results", shards === 1 ? "chaos.md" : `chaos-${shards}-shards.md`);
/** Every gateway this benchmark starts runs with the pool's registry in this many shards. */
const shardVars = { REGISTRY_SHARDS: String(shards) };
const durationMs = Number(values.seconds) * 1000;
const ratePerSecond = Number(values.rate);
const rows = Number(values.rows);
const killEveryMs = Number(values["kill-every"]) * 1000;
const registryRestartAtMs = Number(values["registry-restart-at"]) * 1000;
const AGENTS = 3;
const MODELS = 4;
const DEADLINE_SECONDS = 30;
const BATCH_WINDOW_US = 200_000;
const MAX_CONCURRENCY = 16;
/** The gateway settings the report states, as the gateway ran with them. */
const REPORTED_SETTINGS = [
  "ROUTING_POLICY",
  "QUEUE_LIMIT",
  "HEARTBEAT_SECONDS",
  "AGENT_GRACE_SECONDS",
  "REGISTRY_SHARDS",
];

const say = (message: string) => process.stderr.write(`[chaos] ${message}\n`);

ensureStandardRepository();
const markdown = values["skip-chaos"] ? "" : await chaosPhase();
const overload = values["skip-overload"] ? "" : await overloadPhase();
writeFileSync(out, `${markdown}\n${overload}`);
process.stdout.write(`${markdown}\n${overload}`);
say(`wrote ${out}`);

async function chaosPhase(): Promise<string> {
  say("starting wrangler dev");
  const gateway = await startGateway({ vars: shardVars });
  const models = MULTIPLEX_MODELS.slice(0, MODELS);
  // A 200 ms batching window keeps every request at an agent for a while, as a busy GPU would: at ~20 ms a
  // request, a fault every 10 s would nearly always find nothing in flight and test nothing.
  const agentArgs = [
    ...["--preload", models.join(","), "--max-concurrency", String(MAX_CONCURRENCY)],
    ...["--max-batch-size", "1024", "--max-queue-delay-us", String(BATCH_WINDOW_US)],
  ];
  const launch = (name: string) => startAgent({ gateway: gateway.wsUrl, name, args: agentArgs });
  const agents: AgentProcess[] = [];
  try {
    for (let index = 0; index < AGENTS; index += 1) agents.push(await launch(`agent-${index + 1}`));
    say(`${AGENTS} agents connected; warming up`);
    await runSteadyLoad(
      {
        gatewayUrl: gateway.url,
        apiKey: SECRETS.apiKey,
        ratePerSecond,
        durationMs: 3000,
        models: MODELS,
        deadlineSeconds: DEADLINE_SECONDS,
        rows,
      },
      performance.now(),
    );
    const logBefore = gateway.process.output().length;

    say(`steady load of ${ratePerSecond}/s for ${durationMs / 1000} s, faults on schedule`);
    const startedAt = performance.now();
    const [records, faults] = await Promise.all([
      runSteadyLoad(
        {
          gatewayUrl: gateway.url,
          apiKey: SECRETS.apiKey,
          ratePerSecond,
          durationMs,
          models: MODELS,
          deadlineSeconds: DEADLINE_SECONDS,
          rows,
        },
        startedAt,
      ),
      runFaults(
        {
          gateway,
          adminKey: SECRETS.adminKey,
          apiKey: SECRETS.apiKey,
          agents,
          restartAgent: launch,
          durationMs,
          killEveryMs,
          registryRestartAtMs,
        },
        startedAt,
      ),
    ]);
    const figures = chaosFigures(records, faults, gateway.process.output().slice(logBefore));
    const cpu = cpus()[0]?.model.trim() ?? "unknown CPU";
    const markdown = chaosMarkdown(figures, {
      machine: `${cpus().length} cores (${cpu}), ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}, shared with other work`,
      command: `npm run bench:chaos -- --seconds ${values.seconds} --rate ${values.rate} --rows ${values.rows} --kill-every ${values["kill-every"]} --registry-restart-at ${values["registry-restart-at"]} --burst-seconds ${values["burst-seconds"]} --bursts ${values.bursts} --queue-limit ${values["queue-limit"]}${shards === 1 ? "" : ` --shards ${shards}`}`,
      date: new Date().toISOString().slice(0, 10),
      settings: [
        `Gateway: \`wrangler dev\` on the bundled Worker with wrangler.toml's configuration, given with --var (${describeGateway(gateway, REPORTED_SETTINGS)}).`,
        `Agents: ${agents.length} real agent processes on the CPU (onnxruntime \`--threads ${agentsFlag(agents, "--threads")}\` each, up to ${agentsFlag(agents, "--max-concurrency")} requests at once), each preloading ${MODELS} MLPs of the test repository (~${Math.round(MULTIPLEX_OPTIONS.targetBytes / 1024)} KiB), with dynamic batching and a ${Number(agentsFlag(agents, "--max-queue-delay-us")) / 1000} ms gathering window (\`--max-batch-size ${agentsFlag(agents, "--max-batch-size")} --max-queue-delay-us ${agentsFlag(agents, "--max-queue-delay-us")}\`), so that requests spend a while at the agent, as on a busy GPU, and faults find work in flight; a killed agent is started again at once with the same flags.`,
        `Load: ${ratePerSecond} requests/s, open loop, ${rows} rows of ${FEATURES} features each (a few seeded inputs per model, in turn), the ${MODELS} models in turn, X-Request-Timeout ${DEADLINE_SECONDS} s; a request not answered ${LOST_AFTER_EXTRA_SECONDS} s after that is lost.`,
        `Faults: SIGKILL of one agent (in turn) every ${killEveryMs / 1000} s; one registry restart at ${registryRestartAtMs / 1000} s.`,
      ],
      evictionMethod: `\`POST /admin/pools/${RESTARTED_POOL}/restart\`, which calls \`ctx.abort()\` in the pool's Registry Durable Object (in each of its shards): workerd resets the object as a crash or a deploy would (its memory is gone, every agent's websocket is closed, calls in flight fail), while the Worker in front stays up. Restarting the \`wrangler dev\` process instead would also take the HTTP listener down, so clients would see refused connections for the seconds workerd takes to start, which is an outage of the whole gateway, not an eviction of the registry.`,
    });
    return markdown;
  } finally {
    await Promise.all(agents.map((agent) => agent.stop("SIGKILL")));
    await gateway.stop();
  }
}

async function overloadPhase(): Promise<string> {
  const queueLimit = Number(values["queue-limit"]);
  const settings = {
    queueLimit,
    burstSeconds: Number(values["burst-seconds"]),
    factor: 10,
    bursts: Number(values.bursts),
    serviceWindowMs: 500,
    slotsPerAgent: 2,
  };
  say(`overload: a gateway with QUEUE_LIMIT=${queueLimit}`);
  const gateway = await startGateway({ vars: { ...shardVars, QUEUE_LIMIT: String(queueLimit) } });
  const agents: AgentProcess[] = [];
  try {
    for (let index = 0; index < AGENTS; index += 1) {
      agents.push(
        await startAgent({
          gateway: gateway.wsUrl,
          name: `busy-${index + 1}`,
          args: [
            ...["--preload", MULTIPLEX_MODELS[0] ?? "", "--max-concurrency", String(settings.slotsPerAgent)],
            ...["--max-batch-size", "1024", "--max-queue-delay-us", String(settings.serviceWindowMs * 1000)],
          ],
        }),
      );
    }
    say(`measuring capacity, then ${settings.bursts} bursts of ${settings.factor}x`);
    return overloadMarkdown(await runOverload({ gateway, agents, ...settings }), {
      ...settings,
      gateway,
      agents,
      hostCores: availableParallelism(),
    });
  } finally {
    await Promise.all(agents.map((agent) => agent.stop("SIGKILL")));
    await gateway.stop();
  }
}
