import { baselinePolicy } from "./baseline.ts";
import type { RoutingPolicy } from "./types.ts";

/** Policies by the name configuration uses (ROUTING_POLICY on the gateway). */
export const ROUTING_POLICIES: Readonly<Record<string, RoutingPolicy>> = {
  [baselinePolicy.name]: baselinePolicy,
};

export const DEFAULT_ROUTING_POLICY = baselinePolicy.name;

export function routingPolicy(name: string | undefined): RoutingPolicy {
  const policy = ROUTING_POLICIES[name ?? DEFAULT_ROUTING_POLICY];
  if (policy === undefined) {
    throw new Error(`unknown routing policy '${name}' (known: ${Object.keys(ROUTING_POLICIES).join(", ")})`);
  }
  return policy;
}
