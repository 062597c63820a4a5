import type { ReplicaState } from "../protocol/replica-state.ts";

/** What a request asks of the router: a model (a version, or the default one) and an optional hint. */
export interface RouteRequest {
  model: string;
  /** Omitted: whatever version the replica serves by default. */
  version?: string;
  /** X-Runner-Hint: a finer routing key (an adapter, a prompt family). Best effort. */
  hint?: string;
  /**
   * The model's max_copies (its serving policy): replicas that may hold it at once, loaded, loading or with a
   * load on its way. At that many, its requests go only to those replicas, and wait for them when they are
   * busy (fal's max_concurrency); the Dispatcher enforces it whatever the policy would choose.
   */
  maxCopies?: number;
  /**
   * Yields to the others: while it waits, every waiting request without the flag goes before it (a
   * managed-queue request under the gateway's QUEUE_ASYNC_PRIORITY=below). Among themselves, oldest first.
   */
  background?: true;
  /**
   * Replicas (addresses) this request already failed on without running there, or was lost on: asked again,
   * it goes to another replica that can take it now, if any (Envoy's retry predicate "previous hosts"). A
   * draining agent answers the requests that crossed its drain frame with a 503, and the retry must not go
   * back there before the registry has read that frame. With no other replica able, the same one may serve.
   */
  avoid?: readonly string[];
}

/** A replica as the router sees it. */
export interface ReplicaView {
  /** Unique in the pool: "<agent>/<replica id>". */
  address: string;
  /** Last state the replica reported. */
  state: ReplicaState;
  /**
   * Requests the dispatcher has sent there and not yet seen answered. This, not state.inFlight, decides
   * free capacity: reports lag behind dispatches.
   */
  inFlight: number;
  /** Hints the agent advertises beyond its model names. */
  hints: readonly string[];
  /** A draining replica finishes its work but takes none. */
  draining: boolean;
  /**
   * The models its agent can load (its own repository's); absent: any (it takes them from the gateway's).
   * The Dispatcher never offers a replica a request for a model outside it.
   */
  serves?: ReadonlySet<string>;
  /**
   * Loads the dispatcher has caused there (it sent a request expecting "load") that the replica's report
   * does not show yet: reports lag behind dispatches, and without this a second request would start a
   * second load of the same model elsewhere. The Dispatcher fills it in; absent means none.
   */
  pendingLoads?: readonly PendingLoad[];
}

/** A load the dispatcher expects on a replica, since `since` (the dispatcher's clock). */
export interface PendingLoad {
  model: string;
  version?: string;
  since: number;
}

export type RouteDecision =
  /** Send it there now. `expect` says what the router expects to find: the model loaded, loading, or a load. */
  | { kind: "dispatch"; address: string; expect: "hit" | "loading" | "load" }
  /** Every suitable replica is at capacity: wait for a slot. */
  | { kind: "queue" }
  /** Nothing in the pool can serve it (no replica, or all draining). */
  | { kind: "unavailable"; reason: string };

/** A request waiting in the dispatcher's queue, as the policy sees it. */
export interface QueuedView {
  request: RouteRequest;
  enqueuedAt: number;
}

/** The pool as a policy sees it when it decides: every replica, and the dispatcher's queue. */
export interface PoolView {
  replicas: readonly ReplicaView[];
  /** The dispatcher's queue, oldest first (route() looks at it to coalesce). */
  queue: readonly QueuedView[];
  /** The same queue by model name, each oldest first (for policies that look up a model's waiters). */
  waitingByModel: ReadonlyMap<string, readonly QueuedView[]>;
}

/** A pool with nothing waiting: for decisions taken outside the queue (where a preload goes). */
export const idlePool = (replicas: readonly ReplicaView[]): PoolView => ({
  replicas,
  queue: [],
  waitingByModel: new Map(),
});

/**
 * Scratch space for one routing round: one submit, or one pump that offers every free slot the same queue.
 * A policy keeps there what does not change within the round (where each waiting model would load, say),
 * so the owner decides its lifetime, and the policy stays a function of its arguments.
 */
export class RoutingRound {
  readonly #memo = new Map<symbol, unknown>();

  /** The value kept under `key` while `valid` says it still holds, else a fresh `compute()`, kept. */
  remember<T>(key: symbol, valid: (kept: T) => boolean, compute: () => T): T {
    const kept = this.#memo.get(key) as T | undefined;
    if (kept !== undefined && valid(kept)) return kept;
    const fresh = compute();
    this.#memo.set(key, fresh);
    return fresh;
  }
}

export interface RoutingContext {
  now: number;
  /** In [0, 1); seeded in the simulator, Math.random in production. */
  random: () => number;
  /** Requests per second per model across the pool, as the Dispatcher measured them; absent: unknown. */
  demand?: DemandView;
  /** Bytes of every model the pool has reported loaded so far (sizes outlive evictions). */
  modelBytes?: ReadonlyMap<string, number>;
  /** This decision's round; absent: a round of its own. */
  round?: RoutingRound;
}

/** Recent demand per model name, across the pool. */
export interface DemandView {
  /** Requests per second for `model` lately (decaying average); 0 when never asked for. */
  ratePerSecond(model: string, now: number): number;
}

/**
 * A routing policy is a pair of pure functions. The registry, the agent's standalone pool, the simulator
 * and the benchmarks all call the same ones.
 */
export interface RoutingPolicy {
  readonly name: string;
  /**
   * Whether a request for a model a replica holds may go straight to that replica while it has a free slot
   * and nothing waits, without a decision here (shared/routing/direct-hits.ts): only for a policy whose
   * route() would send such a hit to such a holder anyway. Omitted: every request is routed.
   */
  readonly directHits?: boolean;
  /** Where a new request goes. */
  route(request: RouteRequest, pool: PoolView, context: RoutingContext): RouteDecision;
  /**
   * A slot freed on `replica` (one of `pool.replicas`): which waiting request takes it (an index into
   * `pool.queue`, oldest first), or -1 to leave the slot empty for now.
   */
  pickQueued(replica: ReplicaView, pool: PoolView, context: RoutingContext): number;
  /**
   * How many requests a replica may hold at once, running or waiting there (Ray's max_ongoing_requests,
   * say). Omitted: its reported maxConcurrency, so requests wait in the dispatcher's queue, not an agent's.
   */
  capacity?(replica: ReplicaView): number;
  /**
   * When the policy wants the queue offered to free slots again although nothing changed (a bounded wait
   * runs out): the owner calls Dispatcher.tick() at that time. Omitted or undefined: never by itself.
   */
  nextWakeup?(pool: PoolView, context: RoutingContext): number | undefined;
}
