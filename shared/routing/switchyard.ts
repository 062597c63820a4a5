import { unavailable } from "./decisions.ts";
import { failedHere, freeSlots, hasFreeSlot, holds, matchesHint, usable } from "./replica-facts.ts";
import { SwitchyardCosts } from "./switchyard-costs.ts";
import type {
  QueuedView,
  ReplicaView,
  RouteDecision,
  RouteRequest,
  RoutingContext,
  RoutingPolicy,
} from "./types.ts";
import { lineOrder } from "./waiting-line.ts";

/**
 * Frequency admission counts a model's waiting requests as demand spread over this long: about the time a
 * model loaded for a backlog stays before the rotation evicts it again. Shorter lets unpopular models
 * displace popular ones (thrash), longer makes them wait (tuned with bench/sim: S1 and S5).
 */
export const BACKLOG_HORIZON_MS = 30_000;

/**
 * The bound on waiting: once a request for a model nobody holds has waited this long, its model is loaded
 * wherever that harms least, and frequency admission counts its backlog over STARVING_BACKLOG_MS instead
 * (tuned with bench/sim against the gateway's 60 s deadline).
 */
export const MAX_WAIT_MS = 20_000;
export const STARVING_BACKLOG_MS = 5_000;

/**
 * A request that has waited this long gets its model loaded wherever that harms least, whatever it evicts:
 * it is two thirds through the gateway's default deadline (60 s), and a model kept for others is no reason
 * to let it fail.
 */
export const LAST_RESORT_WAIT_MS = 40_000;

/**
 * A model wants another copy when its demand would keep its copies' slots busier than this (requests per
 * second x inference time, over their slots): past it, queues grow fast, and a copy pays for its load.
 */
export const COPY_UTILIZATION = 0.6;

/**
 * Frequency admission guards the popular models only while the pool is this busy: with slots to spare, a
 * reload costs its load time and nothing more, which the harm already counts.
 */
export const GUARD_FROM_UTILIZATION = 0.5;

/**
 * Switchyard's router: each decision weighs the expected completion time of the options, which none of
 * the anchors does (they prefer holders, else the least loaded).
 *
 * - route: a holder with a free slot runs it now (the busiest such holder, so that a spare copy of a
 *   cooling model goes idle and its replica's LRU retires it). A model being loaded anywhere is never
 *   loaded a second time: its requests wait for that load in the dispatcher's queue, holding no slot
 *   (coalescing). A model with busy copies gets another copy when the wait for a copy exceeds a load plus
 *   the harm of what the load evicts (shared/cache's own admission plan names the victims). A model
 *   nobody holds is loaded at once only where that harms nobody; otherwise see loadTarget().
 * - pickQueued: a freed slot takes the oldest request for a model its replica holds (affinity). Failing
 *   that it loads a waiting model, oldest first, where loadTarget() says: a copy as above, or a model
 *   whose waiting has paid for the harm of the eviction (a bounded wait, see loadTarget).
 * - nextWakeup: when such a wait will have paid, so the owner offers free slots again.
 * - Hints (X-Runner-Hint) break ties: a holder that advertises the hint first, and a load among equals
 *   there. A replica where the model just failed (a failed load, or an ejection for repeated 500s) is passed
 *   over while another can serve; where it failed everywhere it is tried anyway, so the client gets the
 *   actual error rather than a 504.
 */

export const switchyardPolicy: RoutingPolicy = {
  name: "switchyard",
  // A hit goes to a holder with a free slot (route() below), which is what a direct hit takes.
  directHits: true,

  route(request, pool, context): RouteDecision {
    const { replicas } = pool;
    const serving = replicas.filter(usable);
    if (serving.length === 0) return unavailable(replicas);
    const free = serving.filter(hasFreeSlot);
    const failedAll = failedEverywhere(serving, request);
    const packed = busiestFirst(
      free.filter((replica) => holds(replica, request) && (failedAll || !failedHere(replica, request))),
      request,
    )[0];
    if (packed !== undefined) return { kind: "dispatch", address: packed.address, expect: "hit" };

    const costs = new SwitchyardCosts(pool, context);
    if (costs.loadingAnywhere(request)) return { kind: "queue" };
    const target =
      loadTarget(costs, free, request) ??
      (isIdle(serving) || failedAll ? leastHarm(costs, free, request) : undefined);
    return target === undefined
      ? { kind: "queue" }
      : { kind: "dispatch", address: target.address, expect: "load" };
  },

  pickQueued(replica, pool, context): number {
    const { queue } = pool;
    if (replica.draining || queue.length === 0) return -1;
    const costs = new SwitchyardCosts(pool, context);
    const forHeldModel = oldestForHeldModel(costs, replica, pool.replicas);
    if (forHeldModel !== undefined) return queue.indexOf(forHeldModel);

    // The models waiting, in the order of their oldest request: a round robin over the unpopular ones.
    for (const { oldest, target } of loadTargets(costs, context, queue)) {
      if (target === replica) return queue.indexOf(oldest);
    }
    return -1;
  },

  nextWakeup(pool, context): number | undefined {
    const costs = new SwitchyardCosts(pool, context);
    const free = costs.withFreeSlot();
    if (free.length === 0) return undefined;
    let next: number | undefined;
    for (const { oldest } of costs.waiting()) {
      const { request } = oldest;
      if (costs.heldAnywhere(request) || costs.loadingAnywhere(request)) continue;
      let due =
        oldest.enqueuedAt +
        (costs.waitedLongest(request.model) >= MAX_WAIT_MS ? LAST_RESORT_WAIT_MS : MAX_WAIT_MS);
      // The same candidates loadTarget() weighs, so that the wakeup comes when it would say yes.
      const guarded = costs.utilization() >= GUARD_FROM_UTILIZATION;
      const admitted = free.filter(
        (replica) =>
          !failedHere(replica, request) && (!guarded || costs.admits(replica, request, BACKLOG_HORIZON_MS)),
      );
      const best = leastCost(costs, admitted, request);
      if (best !== undefined) {
        // The waiting grows by one millisecond per waiting request per millisecond: when it pays the harm.
        // Paid already, and still waiting (loadTarget said no for another reason): the bound above stays
        // its wakeup. Taking the past moment instead left it no wakeup at all, so a request nothing else woke
        // waited for its deadline (seen in the standalone pool on a busy machine).
        const waiting = costs.waitingFor(request.model);
        const paidAt = costs.now + (best.harm - costs.waitedFor(request.model)) / waiting;
        if (paidAt > context.now) due = Math.min(due, paidAt);
      }
      if (due > context.now && (next === undefined || due < next)) next = due;
    }
    return next;
  },
};

interface Targets {
  queueLength: number;
  targets: Array<{ oldest: QueuedView; target: ReplicaView | undefined }>;
}

/**
 * One dispatcher pump offers every free slot the same queue in one routing round: where each waiting model
 * should load does not depend on which slot asks, so it is worked out once per round (kept in the round the
 * owner passes in the context), and again only after a pick changed the queue (and with it the slots in use).
 */
const LOAD_TARGETS = Symbol("switchyard load targets");

function loadTargets(
  costs: SwitchyardCosts,
  context: RoutingContext,
  queue: readonly QueuedView[],
): Targets["targets"] {
  const compute = (): Targets => {
    const free = costs.withFreeSlot();
    const targets = costs.waiting().map(({ oldest }) => ({
      oldest,
      target: costs.loadingAnywhere(oldest.request) ? undefined : loadTarget(costs, free, oldest.request),
    }));
    return { queueLength: queue.length, targets };
  };
  if (context.round === undefined) return compute().targets;
  return context.round.remember<Targets>(LOAD_TARGETS, (kept) => kept.queueLength === queue.length, compute)
    .targets;
}

/**
 * Where to load `request`'s model now, among the replicas with a free slot, if anywhere. For a model with
 * copies: where a new copy costs less (its load plus the harm of its evictions) than the wait for a copy.
 * For a model nobody holds: where the harm is least, once its waiting requests have waited, together, as
 * long as that harm: what the load inflicts on the victims' future requests is then paid for by the
 * waiting it ends. Hot models accumulate waiting fast and return fast; a single request for an unpopular
 * model waits until its wait outweighs what it would evict (a bounded wait, since waiting only grows).
 */
function loadTarget(
  costs: SwitchyardCosts,
  free: readonly ReplicaView[],
  request: RouteRequest,
): ReplicaView | undefined {
  const candidates = free.filter((replica) => !holds(replica, request) && !failedHere(replica, request));
  const best = leastCost(costs, candidates, request);
  if (best === undefined) return undefined;
  const copies = costs.copiesOf(request);
  if (copies.length > 0) return wantsCopy(costs, request, copies, best) ? best.replica : undefined;
  if (best.harm === 0) return best.replica;
  const guarded = costs.utilization() >= GUARD_FROM_UTILIZATION;
  const waitedLongest = costs.waitedLongest(request.model);
  if (waitedLongest >= LAST_RESORT_WAIT_MS) return best.replica;
  if (waitedLongest >= MAX_WAIT_MS) {
    const admitted = candidates.filter(
      (replica) => !guarded || costs.admits(replica, request, STARVING_BACKLOG_MS),
    );
    return leastCost(costs, admitted, request)?.replica;
  }
  const admitted = candidates.filter(
    (replica) => !guarded || costs.admits(replica, request, BACKLOG_HORIZON_MS),
  );
  const chosen = leastCost(costs, admitted, request);
  return chosen !== undefined && chosen.harm <= costs.waitedFor(request.model) ? chosen.replica : undefined;
}

/**
 * Another copy is worth its load when the wait for the existing copies exceeds a load plus the harm of the
 * eviction shared among the requests it serves (those waiting and those arriving during the load), or when
 * demand would keep the copies busier than COPY_UTILIZATION and that shared harm is below a load.
 */
function wantsCopy(
  costs: SwitchyardCosts,
  request: RouteRequest,
  copies: readonly ReplicaView[],
  load: LoadCost,
): boolean {
  const loadMs = load.cost - load.harm;
  const served = Math.max(1, costs.waitingFor(request.model) + costs.ratePerMs(request.model) * loadMs);
  const sharedHarm = load.harm / served;
  if (costs.waitForCopy(request) > loadMs + sharedHarm) return true;
  const slots = copies.reduce((sum, copy) => sum + copy.state.maxConcurrency, 0);
  const busy = costs.ratePerMs(request.model) * costs.estimates.inferMs(undefined, request);
  return busy > COPY_UTILIZATION * slots && sharedHarm < loadMs;
}

interface LoadCost {
  replica: ReplicaView;
  harm: number;
  /** Its load time plus the harm of its evictions (ms). */
  cost: number;
}

/**
 * The replica where loading the model costs least; among equal costs (an idle pool, say) one that
 * advertises the request's hint (X-Runner-Hint: whatever it names is warm there), then by address, which
 * packs models onto the replicas that have room rather than spreading them: the other replicas keep their
 * room whole for big models (spreading instead cost S4 of bench/sim 0.08 of hit rate and its p99 went from
 * 25 s to the 60 s deadline), and a busy model gets copies elsewhere anyway.
 */
function leastCost(
  costs: SwitchyardCosts,
  replicas: readonly ReplicaView[],
  request: RouteRequest,
): LoadCost | undefined {
  let best: LoadCost | undefined;
  for (const replica of replicas) {
    const harm = costs.evictionHarm(replica, request);
    if (!Number.isFinite(harm)) continue;
    const cost = costs.estimates.loadMs(replica, request) + harm;
    if (
      best === undefined ||
      cost < best.cost ||
      (cost === best.cost && before(replica, best.replica, request))
    ) {
      best = { replica, harm, cost };
    }
  }
  return best;
}

/** Among loads of equal cost: is `a` the better place than `b`? */
function before(a: ReplicaView, b: ReplicaView, request: RouteRequest): boolean {
  if (matchesHint(a, request) !== matchesHint(b, request)) return matchesHint(a, request);
  return a.address < b.address;
}

/**
 * Where the load harms least, preferring replicas where the model has not just failed to load; when it
 * failed everywhere, one of those after all: the failure may have passed, and else the client gets the
 * actual error, not a 504 for a request that waited for nothing.
 */
function leastHarm(costs: SwitchyardCosts, replicas: readonly ReplicaView[], request: RouteRequest) {
  const healthy = replicas.filter((replica) => !failedHere(replica, request));
  return leastCost(costs, healthy.length > 0 ? healthy : replicas, request)?.replica;
}

const failedEverywhere = (replicas: readonly ReplicaView[], request: RouteRequest) =>
  replicas.every((replica) => failedHere(replica, request));

/** Hint matches first, then most slots in use (ties by address, so the list's order never matters). */
function busiestFirst(replicas: readonly ReplicaView[], request: RouteRequest): ReplicaView[] {
  return [...replicas].sort(
    (a, b) =>
      Number(matchesHint(b, request)) - Number(matchesHint(a, request)) ||
      freeSlots(a) - freeSlots(b) ||
      a.address.localeCompare(b.address),
  );
}

/**
 * Nothing runs anywhere, so no answer will offer the queue a slot again: a request queued now would wait
 * for its owner's tick() (or its deadline, where the owner never ticks). Load it rather.
 */
const isIdle = (replicas: readonly ReplicaView[]) =>
  replicas.every((replica) => replica.inFlight === 0 && replica.state.loading.length === 0);

/**
 * The oldest waiting request for a model the replica holds and serves: not one taken out of routing there
 * (a failed run or an ejection), unless it is out everywhere.
 */
function oldestForHeldModel(
  costs: SwitchyardCosts,
  replica: ReplicaView,
  replicas: readonly ReplicaView[],
): QueuedView | undefined {
  let oldest: QueuedView | undefined;
  for (const model of replica.state.loaded) {
    const first = costs
      .waitingByModel()
      .get(model.name)
      ?.find(
        (waiting) =>
          holds(replica, waiting.request) &&
          (!failedHere(replica, waiting.request) ||
            failedEverywhere(replicas.filter(usable), waiting.request)),
      );
    if (first !== undefined && (oldest === undefined || lineOrder(first, oldest) < 0)) oldest = first;
  }
  return oldest;
}
