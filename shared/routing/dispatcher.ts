import { SwitchyardError } from "../errors.ts";
import type { ReplicaState } from "../protocol/replica-state.ts";
import { hasFreeSlot, holds, isLoading } from "./replica-facts.ts";
import type { QueuedView, ReplicaView, RouteRequest, RoutingPolicy } from "./types.ts";

/** A request that is to be sent to a replica now. */
export interface Dispatch<P> {
  address: string;
  payload: P;
  expect: "hit" | "loading" | "load";
  /** How long it waited in the queue (0 when dispatched at once). */
  queuedMs: number;
}

interface Waiting<P> extends QueuedView {
  payload: P;
  deadline: number;
}

export interface DispatcherOptions {
  policy: RoutingPolicy;
  /** Requests that may wait at once; one more gets 429. */
  maxQueue: number;
  now: () => number;
  random?: () => number;
}

/**
 * Capacity accounting and the bounded queue around a routing policy. The gateway's registry and the
 * agent's standalone pool both dispatch through it: the policy decides, this keeps count. It never
 * performs I/O; callers send what it returns.
 */
export class Dispatcher<P> {
  readonly #replicas = new Map<string, ReplicaView>();
  readonly #queue: Waiting<P>[] = [];
  readonly #options: DispatcherOptions;

  constructor(options: DispatcherOptions) {
    this.#options = options;
  }

  get policy(): RoutingPolicy {
    return this.#options.policy;
  }

  get queueLength(): number {
    return this.#queue.length;
  }

  replicas(): readonly ReplicaView[] {
    return [...this.#replicas.values()];
  }

  /** Adds or updates a replica; freed capacity is offered to waiting requests at once. */
  upsertReplica(
    address: string,
    state: ReplicaState,
    details: { hints?: readonly string[]; draining?: boolean } = {},
  ) {
    const known = this.#replicas.get(address);
    this.#replicas.set(address, {
      address,
      state,
      inFlight: known?.inFlight ?? 0,
      hints: details.hints ?? known?.hints ?? [],
      draining: details.draining ?? known?.draining ?? false,
    });
    return this.#pump();
  }

  /** Marks a replica draining (it takes no new work) or back in service (it takes waiting requests at once). */
  setDraining(address: string, draining: boolean): Dispatch<P>[] {
    const replica = this.#replicas.get(address);
    if (replica !== undefined) replica.draining = draining;
    return this.#pump();
  }

  /** Forgets a replica; what it had in flight is the caller's to retry or fail. */
  removeReplica(address: string): void {
    this.#replicas.delete(address);
  }

  /**
   * Routes a new request: dispatched now, queued until a slot frees or its deadline passes, or refused
   * (429 when the queue is full, 503 when nothing can serve it).
   */
  submit(request: RouteRequest, payload: P, deadline: number): Dispatch<P> | { kind: "queued" } {
    const context = this.#context();
    const decision = this.#options.policy.route(request, this.replicas(), context);
    if (decision.kind === "unavailable") {
      throw new SwitchyardError(
        "unavailable",
        `no backend can serve '${request.model}': ${decision.reason}`,
        {
          retryAfterSeconds: 1,
        },
      );
    }
    if (decision.kind === "dispatch") {
      this.#take(decision.address);
      return { address: decision.address, payload, expect: decision.expect, queuedMs: 0 };
    }
    if (this.#queue.length >= this.#options.maxQueue) {
      throw new SwitchyardError(
        "queue_full",
        `every replica is busy and ${this.#queue.length} requests are already waiting; retry later`,
        { retryAfterSeconds: 1 },
      );
    }
    this.#queue.push({ request, enqueuedAt: context.now, deadline, payload });
    return { kind: "queued" };
  }

  /** A request on `address` ended (answered or failed): its slot goes to the queue. */
  release(address: string): Dispatch<P>[] {
    const replica = this.#replicas.get(address);
    if (replica !== undefined) replica.inFlight = Math.max(0, replica.inFlight - 1);
    return this.#pump();
  }

  /** Takes out waiting requests whose deadline has passed; the caller answers them (504). */
  expire(): P[] {
    const now = this.#options.now();
    const expired: P[] = [];
    for (let index = this.#queue.length - 1; index >= 0; index -= 1) {
      const waiting = this.#queue[index];
      if (waiting !== undefined && waiting.deadline <= now) {
        this.#queue.splice(index, 1);
        expired.unshift(waiting.payload);
      }
    }
    return expired;
  }

  /** Takes a waiting request out (its client went away, say). */
  cancel(matches: (payload: P) => boolean): P | undefined {
    const index = this.#queue.findIndex((waiting) => matches(waiting.payload));
    return index < 0 ? undefined : this.#queue.splice(index, 1)[0]?.payload;
  }

  /** Earliest deadline among waiting requests: when the owner should call expire() next. */
  nextDeadline(): number | undefined {
    return this.#queue.reduce<number | undefined>(
      (earliest, waiting) =>
        earliest === undefined || waiting.deadline < earliest ? waiting.deadline : earliest,
      undefined,
    );
  }

  #take(address: string): void {
    const replica = this.#replicas.get(address);
    if (replica !== undefined) replica.inFlight += 1;
  }

  #pump(): Dispatch<P>[] {
    const dispatched: Dispatch<P>[] = [];
    const context = this.#context();
    for (const replica of this.#replicas.values()) {
      while (this.#queue.length > 0 && hasFreeSlot(replica)) {
        const index = this.#options.policy.pickQueued(replica, this.#queue, context);
        const waiting = index >= 0 ? this.#queue.splice(index, 1)[0] : undefined;
        if (waiting === undefined) break;
        this.#take(replica.address);
        dispatched.push({
          address: replica.address,
          payload: waiting.payload,
          expect: holds(replica, waiting.request)
            ? "hit"
            : isLoading(replica, waiting.request)
              ? "loading"
              : "load",
          queuedMs: context.now - waiting.enqueuedAt,
        });
      }
    }
    return dispatched;
  }

  #context() {
    return { now: this.#options.now(), random: this.#options.random ?? Math.random };
  }
}
