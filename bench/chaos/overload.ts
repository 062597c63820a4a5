import { MULTIPLEX_MODELS } from "../../test/fixtures/paths.ts";
import type { AgentProcess } from "../../test/integration/harness/agents.ts";
import { call, mlpRequest, type Outcome } from "../../test/integration/harness/oip-client.ts";
import { type GatewayProcess, SECRETS } from "../../test/integration/harness/wrangler-dev.ts";
import { agentsFlag, countWord, describeGateway, gatewaySetting } from "../run-setup.ts";
import { groupRssBytes } from "./process-memory.ts";

/**
 * The overload phase: bursts of ten times what the pool can serve, against a gateway with a small queue, to
 * show what clients see: admitted requests wait at most about a queue's worth of work, the rest get 429 with
 * Retry-After at once, and neither the gateway's nor the agents' memory grows with the bursts (the second
 * burst must not need more than the first).
 *
 * The pool's capacity is its slots over its service time. On a 2-core host, CPU-bound inference would make
 * the client, the gateway and the agents fight over the same cores, and the figures would measure that
 * fight; so each agent takes `slotsPerAgent` requests at once and holds each for a batching window of
 * `serviceWindowMs` (what a GPU's run time looks like to the host: time, not host CPU).
 */
export interface OverloadOptions {
  gateway: GatewayProcess;
  agents: AgentProcess[];
  queueLimit: number;
  burstSeconds: number;
  factor: number;
  bursts: number;
  serviceWindowMs: number;
  slotsPerAgent: number;
}

export interface BurstFigures {
  sent: number;
  statuses: Record<string, number>;
  refusalsWithRetryAfter: number;
  /** The distinct Retry-After values the refusals carried. */
  retryAfterValues: string[];
  admitted: { p50: number; p99: number; max: number };
  refusedP99: number;
  memory: { gateway: MemoryFigures; agents: MemoryFigures };
}

export interface OverloadFigures {
  capacityPerSecond: number;
  burstPerSecond: number;
  bursts: BurstFigures[];
  /** The same burst at GET /v2/health/live, which reaches no registry: what the local runtime costs alone. */
  control: BurstFigures;
}

/** What a burst needs of an answer. */
interface Answer {
  ok: boolean;
  status: number;
  retryAfter: string | null;
  finishedAt: number;
}

export interface MemoryFigures {
  before: number;
  peak: number;
  after: number;
}

const PAUSE_MS = 3000;

export async function runOverload(options: OverloadOptions): Promise<OverloadFigures> {
  const model = MULTIPLEX_MODELS[0] ?? "";
  const send = async (): Promise<Answer> =>
    answerOf(
      await call(options.gateway.url, model, mlpRequest(1), { headers: { "X-Request-Timeout": "60" } }),
    );
  const live = async (): Promise<Answer> => {
    const response = await fetch(`${options.gateway.url}/v2/health/live`, {
      headers: { Authorization: `Bearer ${SECRETS.apiKey}` },
    });
    await response.arrayBuffer();
    return { ok: response.ok, status: response.status, retryAfter: null, finishedAt: performance.now() };
  };
  const slots = options.agents.length * options.slotsPerAgent;
  const capacityPerSecond = await measureCapacity(send, slots, 6_000);
  const burstPerSecond = capacityPerSecond * options.factor;
  const bursts: BurstFigures[] = [];
  for (let burst = 0; burst < options.bursts; burst += 1) {
    await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
    bursts.push(await runBurst(options, send, burstPerSecond));
  }
  await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
  const control = await runBurst(options, live, burstPerSecond);
  return { capacityPerSecond, burstPerSecond, bursts, control };
}

function answerOf(outcome: Outcome): Answer {
  return {
    ok: outcome.ok,
    status: outcome.status,
    retryAfter: outcome.ok ? null : outcome.headers.get("retry-after"),
    finishedAt: outcome.finishedAt,
  };
}

async function runBurst(
  options: OverloadOptions,
  send: () => Promise<Answer>,
  perSecond: number,
): Promise<BurstFigures> {
  const groups = {
    gateway: [options.gateway.process.child.pid ?? 0],
    agents: options.agents.map((agent) => agent.process.child.pid ?? 0),
  };
  const rss = (pids: number[]) => pids.reduce((sum, pid) => sum + groupRssBytes(pid), 0);
  const memory = {
    gateway: { before: rss(groups.gateway), peak: 0, after: 0 },
    agents: { before: rss(groups.agents), peak: 0, after: 0 },
  };
  const sample = () => {
    memory.gateway.peak = Math.max(memory.gateway.peak, rss(groups.gateway));
    memory.agents.peak = Math.max(memory.agents.peak, rss(groups.agents));
  };
  const sampler = setInterval(sample, 250);

  const startedAt = performance.now();
  const outcomes: Promise<{ outcome: Answer; ms: number }>[] = [];
  const total = Math.round(perSecond * options.burstSeconds);
  for (let index = 0; index < total; index += 1) {
    const wait = startedAt + (index * 1000) / perSecond - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    const sentAt = performance.now();
    outcomes.push(send().then((outcome) => ({ outcome, ms: outcome.finishedAt - sentAt })));
  }
  const results = await Promise.all(outcomes);
  clearInterval(sampler);
  sample();
  await new Promise((resolve) => setTimeout(resolve, PAUSE_MS));
  memory.gateway.after = rss(groups.gateway);
  memory.agents.after = rss(groups.agents);

  const statuses: Record<string, number> = {};
  for (const { outcome } of results) statuses[outcome.status] = (statuses[outcome.status] ?? 0) + 1;
  const refused = results.filter(({ outcome }) => outcome.status === 429);
  const admitted = results.filter(({ outcome }) => outcome.ok).map(({ ms }) => ms);
  return {
    sent: results.length,
    statuses,
    refusalsWithRetryAfter: refused.filter(({ outcome }) => /^\d+$/.test(outcome.retryAfter ?? "")).length,
    retryAfterValues: [...new Set(refused.flatMap(({ outcome }) => outcome.retryAfter ?? []))].sort(),
    admitted: { p50: quantile(admitted, 0.5), p99: quantile(admitted, 0.99), max: quantile(admitted, 1) },
    refusedP99: quantile(
      refused.map(({ ms }) => ms),
      0.99,
    ),
    memory,
  };
}

/** Requests per second the pool completes with every slot always busy (closed loop, two clients a slot). */
async function measureCapacity(send: () => Promise<Answer>, slots: number, ms: number): Promise<number> {
  const until = performance.now() + ms;
  let done = 0;
  await Promise.all(
    Array.from({ length: slots * 2 }, async () => {
      while (performance.now() < until) {
        const outcome = await send();
        if (outcome.ok) done += 1;
      }
    }),
  );
  return done / (ms / 1000);
}

function quantile(values: number[], q: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))] ?? Number.NaN;
}

const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(0)} MiB`;
const kib = (bytes: number) => `${(bytes / 1024).toFixed(0)} KiB`;
const growthPerRequest = (burst: BurstFigures) =>
  Math.max(0, burst.memory.gateway.peak - burst.memory.gateway.before) / Math.max(1, burst.sent);
const ms = (value: number) => (Number.isFinite(value) ? `${value.toFixed(0)} ms` : "-");

/** The report: the setup as it ran (the gateway's settings, the agents' flags), then the figures. */
export function overloadMarkdown(
  figures: OverloadFigures,
  options: OverloadOptions & { hostCores: number },
): string {
  const { gateway, agents } = options;
  const queueLimit = Number(gatewaySetting(gateway, "QUEUE_LIMIT"));
  const serviceWindowMs = Number(agentsFlag(agents, "--max-queue-delay-us")) / 1000;
  const agentsLabel = `${countWord(agents.length)} agents`;
  const retryAfter = [...new Set(figures.bursts.flatMap((burst) => burst.retryAfterValues))];
  const statuses = (burst: BurstFigures) =>
    Object.entries(burst.statuses)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([status, count]) => `${status}: ${count}`)
      .join(", ");
  const expectedWaitMs = (queueLimit / figures.capacityPerSecond) * 1000 + serviceWindowMs;
  return [
    `## Overload: bursts of ${countWord(options.factor)} times capacity`,
    "",
    `A separate gateway (${describeGateway(gateway, ["ROUTING_POLICY", "QUEUE_LIMIT"])}), ${agentsLabel} taking ${agentsFlag(agents, "--max-concurrency")} requests at once each,`,
    `each request held ${serviceWindowMs} ms (a batching window standing in for accelerator time, so that the ${options.hostCores}-core`,
    "host's CPU is not what saturates). Capacity, measured closed-loop first:",
    `${figures.capacityPerSecond.toFixed(1)} requests/s. Then ${figures.bursts.length} bursts of ${options.burstSeconds} s each, open-loop at ${figures.burstPerSecond.toFixed(0)} requests/s`,
    `(${options.factor}x capacity), ${PAUSE_MS / 1000} s apart. A request admitted behind a full queue should wait about`,
    `${(expectedWaitMs / 1000).toFixed(1)} s (queue over capacity, plus its own service).`,
    "",
    "| burst | sent | answers | admitted: p50 | p99 | max | refused: p99 | 429s with Retry-After |",
    "|---|---|---|---|---|---|---|---|",
    ...figures.bursts.map(
      (burst, index) =>
        `| ${index + 1} | ${burst.sent} | ${statuses(burst)} | ${ms(burst.admitted.p50)} | ${ms(burst.admitted.p99)} | ${ms(burst.admitted.max)} | ${ms(burst.refusedP99)} | ${burst.refusalsWithRetryAfter} of ${burst.statuses["429"] ?? 0} |`,
    ),
    "",
    "| resident memory | burst | before | peak | 3 s after |",
    "|---|---|---|---|---|",
    ...figures.bursts.flatMap((burst, index) => [
      `| gateway (wrangler dev + workerd) | ${index + 1} | ${mib(burst.memory.gateway.before)} | ${mib(burst.memory.gateway.peak)} | ${mib(burst.memory.gateway.after)} |`,
      `| ${agentsLabel} | ${index + 1} | ${mib(burst.memory.agents.before)} | ${mib(burst.memory.agents.peak)} | ${mib(burst.memory.agents.after)} |`,
    ]),
    `| gateway, control: \`GET /v2/health/live\` | same rate | ${mib(figures.control.memory.gateway.before)} | ${mib(figures.control.memory.gateway.peak)} | ${mib(figures.control.memory.gateway.after)} |`,
    "",
    "The agents' memory stays flat. The gateway's, under `wrangler dev` (node plus workerd in development",
    `mode), grows with each burst; per request sent, peak over before: ${figures.bursts
      .map((burst, index) => `burst ${index + 1} ${kib(growthPerRequest(burst))}`)
      .join(
        ", ",
      )}, and ${kib(growthPerRequest(figures.control))} for the control burst, whose route never reaches a`,
    "registry. Process memory cannot separate the registry's share from the development runtime's; what",
    "bounds the registry is structural (below) and tested.",
    "",
    "The registry holds at most `QUEUE_LIMIT` waiting requests and no request bodies; each agent's relay holds at",
    "most `MAX_PENDING_BYTES` of them, and agents only what the gateway sends them (each replica's slots).",
    "Everything beyond is refused at once with",
    `${retryAfter.length === 0 ? "429 (none was refused here)" : retryAfter.map((value) => `\`Retry-After: ${value}\``).join(" or ")}.`,
    "",
  ].join("\n");
}
