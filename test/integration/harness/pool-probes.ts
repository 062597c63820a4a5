import { sample } from "../../support/prometheus-text.ts";
import type { AgentProcess } from "./agents.ts";
import { eventually, type Outcome } from "./oip-client.ts";
import { SECRETS } from "./wrangler-dev.ts";

/**
 * What the behaviour tests look at besides a client's answers: one pool's figures in the gateway's /metrics
 * (as an operator's Prometheus scrapes them, with the admin key), and agents held still with SIGSTOP so that
 * requests stay in flight, or in the gateway's queue, exactly as long as a test needs.
 */

/** The gateway's /metrics for `pool`, read with the harness's admin key unless the gateway has its own. */
export async function scrapePool(
  gatewayUrl: string,
  pool: string,
  adminKey: string = SECRETS.adminKey,
): Promise<string> {
  const response = await fetch(`${gatewayUrl}/metrics?pool=${pool}`, {
    headers: { Authorization: `Bearer ${adminKey}` },
  });
  const text = await response.text();
  if (response.status !== 200) throw new Error(`/metrics answered ${response.status}: ${text.slice(0, 200)}`);
  return text;
}

/** One sample of the pool (the pool label added to `labels`); 0 when the scrape has no such sample. */
export async function poolMetric(
  gatewayUrl: string,
  pool: string,
  name: string,
  labels: Record<string, string> = {},
  adminKey?: string,
): Promise<number> {
  return sample(await scrapePool(gatewayUrl, pool, adminKey), name, { pool, ...labels }) ?? 0;
}

/** Waits until the pool's sample reads `value` (gauges such as in_flight and queue_depth). */
export async function waitForMetric(
  gatewayUrl: string,
  pool: string,
  name: string,
  value: number,
  labels: Record<string, string> = {},
  timeoutMs = 15_000,
): Promise<void> {
  await eventually(
    `${name}{pool="${pool}"} to read ${value}`,
    async () => (await poolMetric(gatewayUrl, pool, name, labels)) === value,
    timeoutMs,
  );
}

/** SIGSTOP: the agent keeps its websocket open and answers nothing (frames wait in its socket buffer). */
export function freeze(agent: AgentProcess): void {
  process.kill(-pidOf(agent), "SIGSTOP");
}

/** SIGCONT: the agent reads what arrived meanwhile and carries on. */
export function thaw(agent: AgentProcess): void {
  process.kill(-pidOf(agent), "SIGCONT");
}

/**
 * Runs `during` with the agent frozen, and thaws it however `during` ends: what is sent meanwhile stays in
 * flight there, or in the gateway's queue, for exactly as long as `during` takes. Returns what it returned;
 * a request still waiting on the agent goes back inside an object (a promise returned bare would be awaited
 * here, while the agent that must answer it is frozen).
 */
export async function withAgentFrozen<T>(agent: AgentProcess, during: () => Promise<T>): Promise<T> {
  freeze(agent);
  try {
    return await during();
  } finally {
    thaw(agent);
  }
}

function pidOf(agent: AgentProcess): number {
  const pid = agent.process.child.pid;
  if (pid === undefined) throw new Error(`${agent.name} has no pid`);
  return pid;
}

/** "200 <replica> <cache>" or "<status> <message>": one string to compare, readable when it fails. */
export function describeOutcome(outcome: Outcome): string {
  return outcome.ok
    ? `200 ${outcome.result.headers.get("x-switchyard-replica")} ${outcome.result.headers.get("x-switchyard-cache")}`
    : `${outcome.status} ${outcome.message}`;
}

/** The replica that answered (X-Switchyard-Replica), for successes and errors alike. */
export function replicaOf(outcome: Outcome): string | null {
  return (outcome.ok ? outcome.result.headers : outcome.headers).get("x-switchyard-replica");
}
