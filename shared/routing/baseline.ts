import { unavailable } from "./decisions.ts";
import {
  failedHere,
  freeSlots,
  hasFreeSlot,
  holds,
  isLoading,
  matchesHint,
  usable,
} from "./replica-facts.ts";
import type { PoolView, ReplicaView, RouteDecision, RouteRequest, RoutingPolicy } from "./types.ts";

/**
 * The baseline: go where the model already is. Among replicas with a free slot: one that holds the model
 * (hint matches first), then one loading it, each time the one with the most free slots; otherwise load it
 * where that hurts least (room for another model, most free memory, fewest models, the victim idle
 * longest). When every replica is full, the request waits in the queue; a freed slot takes the oldest
 * request for a model its replica holds, else the oldest request.
 */
export const baselinePolicy: RoutingPolicy = {
  name: "baseline",

  route(request, { replicas }): RouteDecision {
    const serving = replicas.filter(usable);
    if (serving.length === 0) return unavailable(replicas);
    const free = serving.filter(hasFreeSlot);
    const healthy = free.filter((replica) => !failedHere(replica, request));
    const candidates = healthy.length > 0 ? healthy : free;

    const holders = candidates.filter((replica) => holds(replica, request));
    if (holders.length > 0) {
      const best = mostFree(preferHint(holders, request));
      return { kind: "dispatch", address: best.address, expect: "hit" };
    }
    const loaders = candidates.filter((replica) => isLoading(replica, request));
    if (loaders.length > 0)
      return { kind: "dispatch", address: mostFree(loaders).address, expect: "loading" };

    if (candidates.length === 0) return { kind: "queue" };
    const target = [...preferHint(candidates, request)].sort(byLeastHarmfulLoad)[0];
    return target === undefined
      ? { kind: "queue" }
      : { kind: "dispatch", address: target.address, expect: "load" };
  },

  pickQueued(replica: ReplicaView, { queue }: PoolView): number {
    if (replica.draining) return -1;
    const forHeldModel = queue.findIndex((waiting) => holds(replica, waiting.request));
    return forHeldModel >= 0 ? forHeldModel : queue.length > 0 ? 0 : -1;
  },
};

function preferHint(replicas: ReplicaView[], request: RouteRequest): ReplicaView[] {
  const matching = replicas.filter((replica) => matchesHint(replica, request));
  return matching.length > 0 ? matching : replicas;
}

function mostFree(replicas: ReplicaView[]): ReplicaView {
  return replicas.reduce((best, replica) => (freeSlots(replica) > freeSlots(best) ? replica : best));
}

const freeMemory = (replica: ReplicaView) => replica.state.memoryBudgetBytes - replica.state.memoryUsedBytes;
const longestIdle = (replica: ReplicaView) =>
  replica.state.loaded.reduce(
    (idle, model) => (model.inFlight === 0 ? Math.max(idle, model.idleMs) : idle),
    0,
  );

function byLeastHarmfulLoad(a: ReplicaView, b: ReplicaView): number {
  const roomForAnother = (replica: ReplicaView) =>
    replica.state.loaded.length + replica.state.loading.length < replica.state.maxModels ? 1 : 0;
  return (
    roomForAnother(b) - roomForAnother(a) ||
    freeMemory(b) - freeMemory(a) ||
    a.state.loaded.length - b.state.loaded.length ||
    longestIdle(b) - longestIdle(a) ||
    freeSlots(b) - freeSlots(a)
  );
}
