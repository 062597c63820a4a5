import type { ReplicaState } from "../protocol/replica-state.ts";
import { failedHere, hasRoomUnder, holds, matchesHint } from "./replica-facts.ts";
import type { ReplicaView, RouteRequest, RoutingPolicy } from "./types.ts";

/**
 * Direct hits: a request for a model a replica holds, sent by the Worker straight to that replica's agent
 * relay without asking the registry first (one Durable Object call instead of two, the extra hop of the
 * relay split off a hit's path). The registry still decides: it gives the relay a permit with each run that
 * ended well (its release's answer) only while nothing waits in its queue, the agent is not draining, the
 * model is not failing there, and the policy routes hits to holders with a free slot (switchyard's does;
 * the anchors' policies do not take direct hits, so they stay what they are). The relay admits a hit under
 * a fresh permit when its agent last reported the model loaded and the replica has a slot free by the
 * relay's own count, and tells the registry (`adopt`), which takes the slot in its books. Every release
 * renews or withdraws the permit, so the registry takes back the path as soon as anything waits; a race
 * (a grant and a direct hit for the same last slot) costs one request a wait in the agent's queue.
 */

/** How long a permit lasts without a release renewing it. */
export const DIRECT_PERMIT_MS = 5_000;

/** The registry's word that a replica's relay may take a model's hits without asking. */
export interface DirectPermit {
  /** Requests the policy lets the replica hold at once (its capacity under the policy). */
  capacity: number;
}

/**
 * Whether a grant opens the direct path to its replica for the model's next hits (the Worker remembers the
 * replica only then): the policy takes direct hits, the grant is a hit, on a replica advertising the
 * request's hint if it has one, and nothing is left waiting. Otherwise the next request would only be refused.
 */
export function opensDirectPath(input: {
  policy: Pick<RoutingPolicy, "directHits">;
  expect: "hit" | "loading" | "load";
  request: RouteRequest;
  replica: ReplicaView | undefined;
  waiting: number;
}): boolean {
  const { policy, expect, request, replica, waiting } = input;
  if (policy.directHits !== true || expect !== "hit" || waiting > 0 || replica === undefined) return false;
  return request.hint === undefined || matchesHint(replica, request);
}

/**
 * The permit a release's answer carries, or none: the registry's queue is empty (`waiting` 0), the replica
 * takes work, has a slot free in the registry's books (a slot just given to a request that waited is not
 * one), is loading nothing (a load may evict the model, and the relay would not see it before the load's
 * answer), holds the request's model and has not failed it lately, and the policy takes direct hits.
 */
export function directPermit(input: {
  request: RouteRequest;
  replica: ReplicaView | undefined;
  waiting: number;
  capacity: number | undefined;
}): DirectPermit | undefined {
  const { request, replica, waiting, capacity } = input;
  if (capacity === undefined || waiting > 0 || replica === undefined) return undefined;
  if (!hasRoomUnder(replica, capacity)) return undefined;
  if (replica.state.loading.length > 0 || (replica.pendingLoads?.length ?? 0) > 0) return undefined;
  if (!holds(replica, request) || failedHere(replica, request)) return undefined;
  return { capacity };
}

/** Why the relay refuses a direct hit (the Worker asks the registry instead); undefined: it admits it. */
export function directRefusal(input: {
  request: RouteRequest;
  /** The replica's last state as its agent reported it to the relay. */
  state: ReplicaState | undefined;
  /** The models of the runs the relay has out at the replica (answered ones not counted), one per run. */
  running: readonly string[];
  permit: (DirectPermit & { at: number }) | undefined;
  now: number;
}): string | undefined {
  const { request, state, running, permit, now } = input;
  if (permit === undefined) return "no permit";
  if (now - permit.at > DIRECT_PERMIT_MS) return "permit expired";
  if (state === undefined) return "no state";
  const view: ReplicaView = { address: "", state, inFlight: running.length, hints: [], draining: false };
  if (!holds(view, request)) return "not loaded";
  if (failedHere(view, request)) return "failed here";
  // A run for a model the state does not show loaded is a load under way, which may evict this one.
  if (running.some((model) => !state.loaded.some((loaded) => loaded.name === model)))
    return "a load is under way";
  if (running.length >= Math.min(permit.capacity, state.maxConcurrency)) return "no free slot";
  return undefined;
}
