import { env } from "cloudflare:workers";
import type { AgentSnapshot, PoolSnapshot } from "../../../gateway/pool-calls.ts";

/** The pool's Registry stub, for looking at its state from a test. */
export const registry = (pool: string) => env.REGISTRY.getByName(pool);

export async function snapshot(pool: string): Promise<PoolSnapshot> {
  return registry(pool).snapshot();
}

/** Waits until the pool's queue holds `count` requests (requests travel asynchronously). */
export async function waitForQueued(pool: string, count: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { queued } = await snapshot(pool);
    if (queued === count) return;
    if (Date.now() > deadline) throw new Error(`queue holds ${queued} requests, expected ${count}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Waits until the pool has `count` agents connected. */
export async function waitForAgents(pool: string, count: number, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { agents } = await snapshot(pool);
    if (agents.length === count) return;
    if (Date.now() > deadline) throw new Error(`pool has ${agents.length} agents, expected ${count}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

/** Waits until the pool's agents satisfy `condition`. */
export async function waitFor(
  pool: string,
  condition: (agents: AgentSnapshot[]) => boolean,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { agents } = await snapshot(pool);
    if (condition(agents)) return;
    if (Date.now() > deadline)
      throw new Error(`condition not met; agents: ${JSON.stringify(agents.map((agent) => agent.id))}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
