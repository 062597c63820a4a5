import { leastRecentlyUsedFirst } from "../../shared/cache/admission.ts";
import { RAY_MAX_MODELS_PER_REPLICA } from "../../shared/routing/ray-multiplex.ts";
import type { Scenario } from "./scenario.ts";
import type { ReplicaBehaviour } from "./sim-replica.ts";

/**
 * How a policy's replicas behave. Every policy runs on the agent's replicas (LRU cache, concurrent shared
 * loads, the scenario's limits), except Ray Serve, whose multiplexed replica is its own: an LRU of
 * `max_num_models_per_replica` (3) on top of the memory limit, and one lock around every load and eviction.
 */
export function replicaBehaviour(policy: string, scenario: Scenario): ReplicaBehaviour {
  const agent: ReplicaBehaviour = {
    concurrency: scenario.concurrency,
    limits: { maxModels: scenario.maxModels, maxBytes: scenario.maxBytes },
    keepAliveMs: 0,
    victimOrder: leastRecentlyUsedFirst,
    serialLoads: false,
  };
  if (policy !== "ray-multiplex") return agent;
  return {
    ...agent,
    limits: { ...agent.limits, maxModels: Math.min(RAY_MAX_MODELS_PER_REPLICA, scenario.maxModels) },
    serialLoads: true,
  };
}
