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
}
