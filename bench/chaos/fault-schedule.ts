import { DEFAULT_POOL } from "../../shared/pool-names.ts";
import type { AgentProcess } from "../../test/integration/harness/agents.ts";
import type { GatewayProcess } from "../../test/integration/harness/wrangler-dev.ts";

/**
 * The faults of the chaos run, at fixed times: every `killEveryMs` one agent (in turn) is killed with
 * SIGKILL, no drain, no goodbye, and started again at once (as a supervisor would); once, the pool's
 * registry is restarted through the admin API, which resets the Durable Object as a crash or a deploy
 * does: its memory and every agent's socket go. Each fault records when the pool was whole again.
 */
export interface Fault {
  kind: "agent-kill" | "registry-restart";
  target: string;
  /** Milliseconds since the run started. */
  at: number;
  /** When every agent was connected again (ms since start). */
  recoveredAt?: number;
}

/** The pool whose registry is restarted: the one the agents join (they name none, so the default). */
export const RESTARTED_POOL = DEFAULT_POOL;

export interface FaultPlan {
  gateway: GatewayProcess;
  adminKey: string;
  apiKey: string;
  agents: AgentProcess[];
  /** How each agent is started again (the same flags as the first time). */
  restartAgent: (name: string) => Promise<AgentProcess>;
  durationMs: number;
  killEveryMs: number;
  registryRestartAtMs: number;
}

export async function runFaults(plan: FaultPlan, startedAt: number): Promise<Fault[]> {
  const events: { at: number; run: () => Promise<Fault> }[] = [];
  let turn = 0;
  for (let at = plan.killEveryMs; at < plan.durationMs; at += plan.killEveryMs) {
    const index = turn % plan.agents.length;
    turn += 1;
    events.push({ at, run: () => killAndRestart(plan, index, startedAt) });
  }
  events.push({ at: plan.registryRestartAtMs, run: () => restartRegistry(plan, startedAt) });
  events.sort((a, b) => a.at - b.at);
  const faults: Promise<Fault>[] = [];
  for (const event of events) {
    const wait = startedAt + event.at - performance.now();
    if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
    faults.push(event.run());
  }
  return Promise.all(faults);
}

async function killAndRestart(plan: FaultPlan, index: number, startedAt: number): Promise<Fault> {
  const victim = plan.agents[index];
  if (victim === undefined) throw new Error(`no agent #${index}`);
  const fault: Fault = { kind: "agent-kill", target: victim.name, at: performance.now() - startedAt };
  await victim.stop("SIGKILL");
  plan.agents[index] = await plan.restartAgent(victim.name);
  await whole(plan);
  fault.recoveredAt = performance.now() - startedAt;
  return fault;
}

async function restartRegistry(plan: FaultPlan, startedAt: number): Promise<Fault> {
  const fault: Fault = {
    kind: "registry-restart",
    target: `pool ${RESTARTED_POOL}`,
    at: performance.now() - startedAt,
  };
  const response = await fetch(`${plan.gateway.url}/admin/pools/${RESTARTED_POOL}/restart`, {
    method: "POST",
    headers: { Authorization: `Bearer ${plan.adminKey}` },
  });
  if (response.status !== 202)
    throw new Error(`registry restart answered ${response.status}: ${await response.text()}`);
  // The agents' sockets drop a moment after the answer; wait for that before waiting for them to return.
  await new Promise((resolve) => setTimeout(resolve, 200));
  await whole(plan);
  fault.recoveredAt = performance.now() - startedAt;
  return fault;
}

/** Waits until the gateway counts every agent as connected and serving. */
async function whole(plan: FaultPlan): Promise<void> {
  for (;;) {
    const response = await fetch(`${plan.gateway.url}/v2/health/ready`, {
      headers: { Authorization: `Bearer ${plan.apiKey}` },
    });
    const body = (await response.json()) as { agents?: number };
    if (response.status === 200 && body.agents === plan.agents.length) return;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
