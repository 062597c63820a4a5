import { holds, isLoading } from "./replica-facts.ts";
import type { ReplicaView, RouteDecision, RouteRequest } from "./types.ts";

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

/** First come, first served: the oldest waiting request, if any. */
export const oldestFirst = (replica: ReplicaView, queueLength: number) =>
  replica.draining || queueLength === 0 ? -1 : 0;
