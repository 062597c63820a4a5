import type { ReplicaView, RouteRequest } from "./types.ts";

// Small facts about a replica that every policy needs; one place, so that policies only differ in what
// they decide, not in how they read a replica.

export const versionMatches = (request: RouteRequest, version: string) =>
  request.version === undefined || request.version === version;

export function holds(replica: ReplicaView, request: RouteRequest): boolean {
  return replica.state.loaded.some(
    (model) => model.name === request.model && versionMatches(request, model.version),
  );
}

export function isLoading(replica: ReplicaView, request: RouteRequest): boolean {
  return replica.state.loading.some(
    (model) => model.name === request.model && versionMatches(request, model.version),
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
