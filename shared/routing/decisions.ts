import { holds, isLoading } from "./replica-facts.ts";
import type { ReplicaView, RouteDecision, RouteRequest, RoutingContext } from "./types.ts";

// Decisions every policy makes the same way; one place, so that policies differ only in their choices.

/** Nothing in the pool can serve: no replica at all, or every one draining. */
export function unavailable(replicas: readonly ReplicaView[]): RouteDecision {
  return {
    kind: "unavailable",
    reason: replicas.length === 0 ? "no agent is connected" : "every agent is draining",
  };
}

/** Dispatch there, saying what the replica will find: the model loaded, loading, or to be loaded. */
export function dispatchTo(replica: ReplicaView, request: RouteRequest): RouteDecision {
  const expect = holds(replica, request) ? "hit" : isLoading(replica, request) ? "loading" : "load";
  return { kind: "dispatch", address: replica.address, expect };
}

/** One of `replicas`, uniformly at random (the context's random, seeded in the simulator). */
export function pickAtRandom<T>(items: readonly T[], context: RoutingContext): T | undefined {
  return items[Math.min(items.length - 1, Math.floor(context.random() * items.length))];
}

/**
 * Two distinct items at random, or the only one: the sample of the "power of two choices" (Mitzenmacher),
 * as Ray Serve's PowerOfTwoChoicesRequestRouter draws it.
 */
export function twoAtRandom<T>(items: readonly T[], context: RoutingContext): T[] {
  if (items.length <= 2) {
    const [first, second] = items;
    if (first === undefined) return [];
    if (second === undefined) return [first];
    return context.random() < 0.5 ? [first, second] : [second, first];
  }
  const i = Math.floor(context.random() * items.length);
  let j = Math.floor(context.random() * (items.length - 1));
  if (j >= i) j += 1;
  return [items[i], items[j]].filter((item): item is T => item !== undefined);
}

/** First come, first served: the oldest waiting request, if any. */
export const oldestFirst = (replica: ReplicaView, queueLength: number) =>
  replica.draining || queueLength === 0 ? -1 : 0;
