import type { ReplicaState } from "../protocol/replica-state.ts";

/** What a request asks of the router: a model (a version, or the default one) and an optional hint. */
export interface RouteRequest {
  model: string;
  /** Omitted: whatever version the replica serves by default. */
  version?: string;
  /** X-Runner-Hint: a finer routing key (an adapter, a prompt family). Best effort. */
  hint?: string;
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

export interface RoutingContext {
  now: number;
  /** In [0, 1); seeded in the simulator, Math.random in production. */
  random: () => number;
  /** Requests per second per model across the pool, as the Dispatcher measured them; absent: unknown. */
  demand?: DemandView;
  /** The dispatcher's queue, oldest first (route() looks at it to coalesce); absent: empty or unknown. */
  queue?: readonly QueuedView[];
  /** The same queue by model name, each oldest first (for policies that look up a model's waiters). */
  waitingByModel?: ReadonlyMap<string, readonly QueuedView[]>;
  /** Bytes of every model the pool has reported loaded so far (sizes outlive evictions). */
  modelBytes?: ReadonlyMap<string, number>;
  /** Every replica of the pool (pickQueued() sees one replica; some policies weigh it against the rest). */
  replicas?: readonly ReplicaView[];
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
  /** Where a new request goes. */
  route(request: RouteRequest, replicas: readonly ReplicaView[], context: RoutingContext): RouteDecision;
  /**
   * A slot freed on `replica`: which waiting request takes it (an index into `queue`, oldest first), or -1
   * to leave the slot empty for now.
   */
  pickQueued(replica: ReplicaView, queue: readonly QueuedView[], context: RoutingContext): number;
  /**
   * How many requests a replica may hold at once, running or waiting there (Ray's max_ongoing_requests,
   * say). Omitted: its reported maxConcurrency, so requests wait in the dispatcher's queue, not an agent's.
   */
  capacity?(replica: ReplicaView): number;
  /**
   * When the policy wants the queue offered to free slots again although nothing changed (a bounded wait
   * runs out): the owner calls Dispatcher.tick() at that time. Omitted or undefined: never by itself.
   */
  nextWakeup?(
    replicas: readonly ReplicaView[],
    queue: readonly QueuedView[],
    context: RoutingContext,
  ): number | undefined;
}
