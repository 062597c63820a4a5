import type { PendingLoad, ReplicaView, RouteRequest, RoutingPolicy } from "./types.ts";

// Small facts about a replica that every policy needs; one place, so that policies only differ in what
// they decide, not in how they read a replica.

export const versionMatches = (request: RouteRequest, version: string) =>
  request.version === undefined || request.version === version;

export function holds(replica: ReplicaView, request: RouteRequest): boolean {
  return replica.state.loaded.some(
    (model) => model.name === request.model && versionMatches(request, model.version),
  );
}

/** Loading it, by its last report. */
export function isLoading(replica: ReplicaView, request: RouteRequest): boolean {
  return replica.state.loading.some(
    (model) => model.name === request.model && versionMatches(request, model.version),
  );
}

/** Loading it by its report, or about to: the dispatcher sent it a request that loads it (reports lag). */
export const isLoadingOrPending = (replica: ReplicaView, request: RouteRequest) =>
  isLoading(replica, request) || pendingLoadOf(replica, request) !== undefined;

export function pendingLoadOf(replica: ReplicaView, request: RouteRequest): PendingLoad | undefined {
  return replica.pendingLoads?.find(
    (load) =>
      load.model === request.model &&
      (request.version === undefined || load.version === undefined || load.version === request.version),
  );
}

/** Its last load of this model failed (recently): the router stays away while others can serve. */
export function failedHere(replica: ReplicaView, request: RouteRequest): boolean {
  return replica.state.failed.some(
    (model) => model.name === request.model && versionMatches(request, model.version),
  );
}

export function matchesHint(replica: ReplicaView, request: RouteRequest): boolean {
  return request.hint !== undefined && replica.hints.includes(request.hint);
}

export const freeSlots = (replica: ReplicaView) => replica.state.maxConcurrency - replica.inFlight;

export const hasFreeSlot = (replica: ReplicaView) => !replica.draining && freeSlots(replica) > 0;

export const usable = (replica: ReplicaView) => !replica.draining;

/** Takes another request under a policy's own per-replica limit (Ray's max_ongoing_requests, say). */
export const hasRoomUnder = (replica: ReplicaView, capacity: number) =>
  !replica.draining && replica.inFlight < capacity;

/** How many requests the policy lets a replica hold: its own limit, else the replica's concurrency. */
export const capacityUnder = (policy: RoutingPolicy, replica: ReplicaView) =>
  policy.capacity?.(replica) ?? replica.state.maxConcurrency;
