import { dispatchTo, unavailable } from "./decisions.ts";
import { failedHere, freeSlots, hasFreeSlot, holds, isLoading, usable } from "./replica-facts.ts";
import type { ReplicaView, RouteRequest, RoutingContext, RoutingPolicy } from "./types.ts";

// KServe ModelMesh, from its docs (kserve/modelmesh docs/overview.md: "acts as a distributed LRU cache";
// docs/configuration/README.md, "Model Auto-Scaling") and the placement the design notes summarise.

/**
 * MM_SCALEUP_RPM_THRESHOLD: "a target request rate per model copy measured in requests per minute ... if
 * one copy's share of requests increases above this threshold more copies will be added" (default 2000).
 */
export const MODELMESH_SCALE_UP_RPM = 2_000;

/**
 * ModelMesh as a router over a distributed LRU cache. A request for a loaded model goes to the copy with
 * the fewest requests in flight; a model still loading is waited for on its loading copy. A miss loads
 * the model on the instance that ranks first by free space, then by LRU age (the instance whose least
 * recently used model has been idle longest loses the least). When a model's request rate per copy
 * exceeds 2000 a minute, another copy is loaded where none is (ModelMesh loads it in the background; here
 * the request that crosses the threshold carries the load). With every copy busy, requests wait for one.
 */
export const modelMeshPolicy: RoutingPolicy = {
  name: "modelmesh",

  route(request, { replicas }, context) {
    const serving = replicas.filter(usable);
    if (serving.length === 0) return unavailable(replicas);
    const copies = serving.filter((replica) => holds(replica, request) || isLoading(replica, request));
    const freeLoaded = copies.filter((replica) => hasFreeSlot(replica) && holds(replica, request));
    const freeLoading = copies.filter((replica) => hasFreeSlot(replica) && !holds(replica, request));

    if (copies.length > 0 && wantsAnotherCopy(request, copies.length, serving.length, context)) {
      const place = bestPlacement(serving.filter((replica) => !copies.includes(replica)));
      if (place !== undefined) return dispatchTo(place, request);
    }
    const copy = fewestInFlight(freeLoaded) ?? fewestInFlight(freeLoading);
    if (copy !== undefined) return dispatchTo(copy, request);
    if (copies.length > 0) return { kind: "queue" };
    const place = bestPlacement(serving.filter((replica) => !failedHere(replica, request)));
    return place === undefined ? { kind: "queue" } : dispatchTo(place, request);
  },

  pickQueued(replica, { queue, replicas }) {
    if (replica.draining) return -1;
    const own = queue.findIndex((waiting) => holds(replica, waiting.request));
    if (own >= 0) return own;
    const loadingHere = queue.findIndex((waiting) => isLoading(replica, waiting.request));
    if (loadingHere >= 0) return loadingHere;
    // A miss: this instance loads it, unless a copy exists elsewhere (that copy serves it).
    return queue.findIndex(
      (waiting) =>
        !replicas.some(
          (other) => usable(other) && (holds(other, waiting.request) || isLoading(other, waiting.request)),
        ),
    );
  },
};

function wantsAnotherCopy(
  request: RouteRequest,
  copies: number,
  instances: number,
  context: RoutingContext,
): boolean {
  const perMinute = (context.demand?.ratePerSecond(request.model, context.now) ?? 0) * 60;
  return copies < instances && perMinute / copies > MODELMESH_SCALE_UP_RPM;
}

function fewestInFlight(replicas: readonly ReplicaView[]): ReplicaView | undefined {
  return [...replicas].sort((a, b) => a.inFlight - b.inFlight || a.address.localeCompare(b.address))[0];
}

/** Free space first (model slots, then bytes), then the oldest least-recently-used model. */
function bestPlacement(replicas: readonly ReplicaView[]): ReplicaView | undefined {
  return replicas
    .filter(hasFreeSlot)
    .sort(
      (a, b) =>
        freeModelSlots(b) - freeModelSlots(a) ||
        freeBytes(b) - freeBytes(a) ||
        lruAgeMs(b) - lruAgeMs(a) ||
        freeSlots(b) - freeSlots(a) ||
        a.address.localeCompare(b.address),
    )[0];
}

const freeModelSlots = (replica: ReplicaView) =>
  Math.max(0, replica.state.maxModels - replica.state.loaded.length - replica.state.loading.length);
const freeBytes = (replica: ReplicaView) =>
  Math.max(0, replica.state.memoryBudgetBytes - replica.state.memoryUsedBytes);
/** How long the replica's least recently used idle model has been idle. */
const lruAgeMs = (replica: ReplicaView) =>
  replica.state.loaded.reduce((age, model) => (model.inFlight === 0 ? Math.max(age, model.idleMs) : age), 0);
