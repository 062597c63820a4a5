import { baselinePolicy } from "./baseline.ts";
import { falHintsPolicy } from "./fal-hints.ts";
import { leastLoadedPolicy } from "./least-loaded.ts";
import { modelMeshPolicy } from "./modelmesh.ts";
import { randomPolicy } from "./random.ts";
import { rayMultiplexPolicy } from "./ray-multiplex.ts";
import { switchyardPolicy } from "./switchyard.ts";
import type { RoutingPolicy } from "./types.ts";

/** Policies by the name configuration uses (ROUTING_POLICY on the gateway). */
export const ROUTING_POLICIES: Readonly<Record<string, RoutingPolicy>> = Object.fromEntries(
  [
    switchyardPolicy,
    baselinePolicy,
    randomPolicy,
    leastLoadedPolicy,
    falHintsPolicy,
    rayMultiplexPolicy,
    modelMeshPolicy,
  ].map((policy) => [policy.name, policy]),
);

/** The anchors: faithful re-implementations of what Ray Serve, fal and ModelMesh document. */
export const ANCHOR_POLICIES = ["random", "least-loaded", "fal-hints", "ray-multiplex", "modelmesh"] as const;

/**
 * The policy used when configuration names none. `switchyard` waits for bounded times, so its owners call
 * Dispatcher.tick() at nextWakeup(): the Registry from its alarm, the standalone pool from a timer.
 */
export const DEFAULT_ROUTING_POLICY = switchyardPolicy.name;

export function routingPolicy(name: string | undefined): RoutingPolicy {
  const policy = ROUTING_POLICIES[name ?? DEFAULT_ROUTING_POLICY];
  if (policy === undefined) {
    throw new Error(`unknown routing policy '${name}' (known: ${Object.keys(ROUTING_POLICIES).join(", ")})`);
  }
  return policy;
}
