import { dispatchTo, unavailable } from "./decisions.ts";
import { twoAtRandom } from "./random-choice.ts";
import { holds, isLoading, usable } from "./replica-facts.ts";
import type { QueuedView, ReplicaView, RouteRequest, RoutingContext, RoutingPolicy } from "./types.ts";

// Ray Serve's model multiplexing, from its router (python/ray/serve/_private/request_router/: pow_2_router.py,
// request_router.py's MultiplexMixin and FIFOMixin), its constants and its docs (serve/model-multiplexing).

/** `max_ongoing_requests`: a replica accepts at most this many requests (Ray Serve's default, 5). */
export const RAY_MAX_ONGOING_REQUESTS = 5;
/**
 * RAY_SERVE_MULTIPLEXED_MODEL_ID_MATCHING_TIMEOUT_S (1.0 by default); MultiplexMixin draws each matching
 * timeout uniformly between it and twice it, "to avoid thundering herd".
 */
export const RAY_MATCHING_TIMEOUT_MS = 1_000;
/**
 * `max_num_models_per_replica` of @serve.multiplexed (default 3): the replica's LRU evicts before loading,
 * and one asyncio lock serializes its loads. Both are the replica's doing, not the router's: the
 * simulator gives ray-multiplex replicas that cache (bench/sim/replica-profiles.ts).
 */
export const RAY_MAX_MODELS_PER_REPLICA = 3;

/**
 * Ray Serve with multiplexing. A new request's candidates are the replicas that report its model id (Ray
 * reports models loading as well as loaded), or when none does, the replicas with the fewest models; two
 * are sampled, and of those that accept (fewer than max_ongoing_requests) the one with the shorter queue
 * wins. If neither accepts, the request waits and is retried: from its second try on, within its matching
 * timeout, the candidates are the replicas with the fewest models; after it, every replica. A freed
 * replica first takes the oldest waiting request for a model it reports (FIFOMixin matches on the
 * multiplexed model id), else the oldest it is a candidate for.
 */
export const rayMultiplexPolicy: RoutingPolicy = {
  name: "ray-multiplex",

  capacity: () => RAY_MAX_ONGOING_REQUESTS,

  route(request, { replicas }, context) {
    const serving = replicas.filter(usable);
    if (serving.length === 0) return unavailable(replicas);
    const reporting = serving.filter((replica) => reportsModel(replica, request));
    const candidates = reporting.length > 0 ? reporting : fewestModels(serving);
    const accepting = twoAtRandom(candidates, context).filter(accepts);
    const [first, second] = accepting;
    const shorter = second !== undefined && second.inFlight < (first?.inFlight ?? Infinity) ? second : first;
    return shorter === undefined ? { kind: "queue" } : dispatchTo(shorter, request);
  },

  pickQueued(replica, { queue, replicas }, context) {
    if (!accepts(replica)) return -1;
    const sameModel = queue.findIndex((waiting) => reportsModel(replica, waiting.request));
    if (sameModel >= 0) return sameModel;
    const amongFewest = fewestModels(replicas.filter(usable)).some(
      (each) => each.address === replica.address,
    );
    return queue.findIndex((waiting) => amongFewest || matchingTimedOut(waiting, context));
  },

  nextWakeup({ queue }, context) {
    // Once a waiting request's matching timeout has run out, every replica becomes its candidate.
    const latest = RAY_MATCHING_TIMEOUT_MS * 2;
    // The earliest such time among them all: the line is not in arrival order (background requests last).
    let next: number | undefined;
    for (const waiting of queue) {
      const at = waiting.enqueuedAt + latest;
      if (at > context.now && (next === undefined || at < next)) next = at;
    }
    return next;
  },
};

/** Ray pushes a replica's model ids as soon as a load starts, so "loading" counts as having it. */
const reportsModel = (replica: ReplicaView, request: RouteRequest) =>
  holds(replica, request) || isLoading(replica, request);

const accepts = (replica: ReplicaView) => !replica.draining && replica.inFlight < RAY_MAX_ONGOING_REQUESTS;

const modelCount = (replica: ReplicaView) => replica.state.loaded.length + replica.state.loading.length;

/** MultiplexMixin._get_replica_ids_with_fewest_multiplexed_models. */
function fewestModels(replicas: readonly ReplicaView[]): ReplicaView[] {
  const fewest = Math.min(...replicas.map(modelCount));
  return replicas.filter((replica) => modelCount(replica) === fewest);
}

/** Each evaluation draws its timeout afresh in [1, 2) x the constant, as MultiplexMixin does. */
function matchingTimedOut(waiting: QueuedView, context: RoutingContext): boolean {
  const timeout = RAY_MATCHING_TIMEOUT_MS * (1 + context.random());
  return context.now - waiting.enqueuedAt >= timeout;
}
