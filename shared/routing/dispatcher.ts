import { SwitchyardError } from "../errors.ts";
import type { ReplicaState } from "../protocol/replica-state.ts";
import { DemandTracker } from "./demand.ts";
import { fitsBesidePins } from "./placement.ts";
import {
  capacityUnder,
  hasRoomUnder,
  holds,
  isLoading,
  isLoadingOrPending,
  matchesHint,
} from "./replica-facts.ts";
import {
  type PendingLoad,
  type PoolView,
  type QueuedView,
  type ReplicaView,
  type RouteRequest,
  type RoutingContext,
  type RoutingPolicy,
  RoutingRound,
} from "./types.ts";
import { WaitingLine } from "./waiting-line.ts";

/**
 * A load the dispatcher caused is forgotten after this long even if no report ever showed it (it may have
 * come and gone between two reports); by then the agent has long reported its state.
 */
const PENDING_LOAD_TTL_MS = 30_000;

/**
 * A request that may go elsewhere does when the queue holds this many rounds of the suitable replicas'
 * slots: a short wait (a load others wait for, a burst) stays with the replicas that hold the model.
 */
export const BACKLOG_ROUNDS = 2;

/** A request that is to be sent to a replica now. */
export interface Dispatch<P> {
  address: string;
  payload: P;
  expect: "hit" | "loading" | "load";
  /** How long it waited in the queue (0 when dispatched at once). */
  queuedMs: number;
}

/**
 * What became of a submitted request. Refusals are values with the error the client gets, so that each owner
 * decides what to do with them (the registry may keep a request waiting for agents expected back).
 */
export type Submitted<P> =
  | { kind: "dispatched"; dispatch: Dispatch<P> }
  | { kind: "queued" }
  /** Nothing in the pool can serve it (no replica, or every one draining): 503. */
  | { kind: "unavailable"; error: SwitchyardError }
  /** Every suitable replica is busy and the queue is full: 429. */
  | { kind: "queue_full"; error: SwitchyardError }
  /** Agents are connected, and none of them can load the model (their repositories lack it): 404. */
  | { kind: "not_found"; error: SwitchyardError };

/**
 * When a request may go elsewhere instead (a sharded pool's other registry shards, gateway/shard-walk.ts):
 * - "backlog": rather than wait behind a queue (of every model's requests here) already BACKLOG_ROUNDS rounds
 *   of the suitable replicas' slots deep, unless the model is at its max_copies;
 * - "unmatched": that too, and rather than load it here when no replica here holds it (loaded, loading, or
 *   a load on its way), so that a copy elsewhere is found first;
 * - "unhinted": that too, and when no replica here advertises the request's hint (a replica that holds it
 *   still makes this place a "hit").
 */
export type Elsewhere = "backlog" | "unmatched" | "unhinted";

/** What submit() answers, instead of routing, for a request that may go elsewhere. */
export type NotHere =
  | { kind: "backlogged" }
  /** Replicas here could take it, without a match (`holds`: one holds the model, not the hint). */
  | { kind: "unmatched"; holds: boolean };

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
  /** Where submitted requests are counted per model; one of its own when omitted. */
  demand?: DemandTracker;
}

/**
 * Capacity accounting and the bounded queue around a routing policy. The gateway's registry and the
 * agent's standalone pool both dispatch through it: the policy decides, this keeps count. It never
 * performs I/O; callers send what it returns.
 *
 * What its owner calls: submit() for each request; upsertReplica() with every report an agent sends
 * (results piggyback one); release() when a request ends; setDraining()/removeReplica() as agents come
 * and go. After each of these, arm one timer for the earlier of nextDeadline() and nextWakeup(); when it
 * fires, answer expire()'s requests with 504 and send what tick() returns. (A policy's bounded waits,
 * switchyard's, end on that timer; without it they end on the next answer or report instead.) The
 * dispatcher measures demand per model on submit() and remembers the loads it caused until a report
 * shows them, so none of that is the owner's to feed.
 */
export class Dispatcher<P> {
  readonly #replicas = new Map<string, ReplicaView>();
  readonly #queue = new WaitingLine<Waiting<P>>();
  readonly #options: DispatcherOptions;
  readonly #demand: DemandTracker;
  /** Models with a max_copies, as their latest request gave it (RouteRequest.maxCopies). */
  readonly #caps = new Map<string, number>();
  /** Sizes of the models replicas reported loaded: a load's room is planned with them after eviction. */
  readonly #modelBytes = new Map<string, number>();

  constructor(options: DispatcherOptions) {
    this.#options = options;
    this.#demand = options.demand ?? new DemandTracker();
  }

  /** Requests per second per model, as submitted here. */
  get demand(): DemandTracker {
    return this.#demand;
  }

  /** The waiting requests, oldest first (read-only view). */
  queued(): readonly QueuedView[] {
    return this.#queue.items;
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

  /** The replica at `address`, as the router sees it. */
  replica(address: string): ReplicaView | undefined {
    return this.#replicas.get(address);
  }

  /**
   * A hit its replica's relay took without a decision here (a direct hit, direct-hits.ts): its slot is
   * taken and its demand counted as for one routed here; where this view does not show the model held
   * there (the relay's facts were older), it is taken as what it is, a wait for a load under way or a load.
   * False when the replica is unknown or draining (the owner forgets the run; its release frees nothing).
   */
  adopt(address: string, request: RouteRequest): boolean {
    const replica = this.#replicas.get(address);
    if (replica === undefined || replica.draining) return false;
    const now = this.#options.now();
    this.#demand.record(request.model, now);
    const expect = holds(replica, request)
      ? "hit"
      : isLoadingOrPending(replica, request)
        ? "loading"
        : "load";
    this.#take(address, request, expect, now);
    return true;
  }

  /** Adds or updates a replica; freed capacity is offered to waiting requests at once. */
  upsertReplica(
    address: string,
    state: ReplicaState,
    details: { hints?: readonly string[]; draining?: boolean; serves?: ReadonlySet<string> | undefined } = {},
  ) {
    for (const model of state.loaded) this.#modelBytes.set(model.name, model.bytes);
    const known = this.#replicas.get(address);
    const pendingLoads = stillPending(known?.pendingLoads, state, this.#options.now());
    const serves = "serves" in details ? details.serves : known?.serves;
    this.#replicas.set(address, {
      address,
      state,
      inFlight: known?.inFlight ?? 0,
      hints: details.hints ?? known?.hints ?? [],
      draining: details.draining ?? known?.draining ?? false,
      ...(pendingLoads.length > 0 ? { pendingLoads } : {}),
      ...(serves === undefined ? {} : { serves }),
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
   * (429 when the queue is full, 503 when nothing can serve it). One that may go `elsewhere` is answered
   * NotHere when this is not the place for it (Elsewhere).
   */
  submit(request: RouteRequest, payload: P, deadline: number): Submitted<P>;
  submit(
    request: RouteRequest,
    payload: P,
    deadline: number,
    elsewhere: Elsewhere | undefined,
  ): Submitted<P> | NotHere;
  submit(request: RouteRequest, payload: P, deadline: number, elsewhere?: Elsewhere): Submitted<P> | NotHere {
    const context = this.#context();
    const pool = this.#pool();
    this.#noteCap(request);
    const servable = pool.replicas.filter((replica) => serves(replica, request));
    if (servable.length === 0 && pool.replicas.length > 0) {
      const message = `no connected agent has '${request.model}' in its repository`;
      return { kind: "not_found", error: new SwitchyardError("not_found", message) };
    }
    const atCap = this.#atCap(request.model);
    const able = servable.filter(
      (replica) => hasCopy(replica, request.model) || (!atCap && this.#hasRoom(replica, request.model)),
    );
    const taking = able.filter((replica) => !replica.draining);
    // A request asked again prefers the replicas it has not failed on (RouteRequest.avoid): a copy only on
    // those it failed on is no reason to stay in this shard.
    const fresh = request.avoid === undefined ? taking : notAvoided(taking, request.avoid);
    if (taking.length > 0 && (elsewhere === "unmatched" || elsewhere === "unhinted")) {
      const holding = fresh.some(
        (replica) => holds(replica, request) || isLoadingOrPending(replica, request),
      );
      const hinted =
        elsewhere === "unhinted" && request.hint !== undefined
          ? fresh.some((replica) => matchesHint(replica, request))
          : holding;
      if (!hinted) return { kind: "unmatched", holds: holding };
    }
    // Demand where the request is routed, not where it only looked for a copy.
    this.#demand.record(request.model, context.now);
    // Asked again, it goes where it has not failed when the policy sends it to one of those now; otherwise
    // the policy chooses among all, as for a first ask (back where it failed rather than wait, say).
    // (The narrowed look has a round of its own: what a policy keeps for the round is over the whole pool.)
    const narrowed = fresh.length > 0 && fresh.length < taking.length && this.#anyFree(fresh);
    const elsewhereFirst = narrowed
      ? this.#options.policy.route(
          request,
          { ...pool, replicas: fresh },
          { ...context, round: new RoutingRound() },
        )
      : undefined;
    const decision =
      elsewhereFirst?.kind === "dispatch"
        ? elsewhereFirst
        : this.#options.policy.route(request, { ...pool, replicas: able }, context);
    if (decision.kind === "unavailable") {
      const message = `no backend can serve '${request.model}': ${decision.reason}`;
      return {
        kind: "unavailable",
        error: new SwitchyardError("unavailable", message, { retryAfterSeconds: 1 }),
      };
    }
    if (decision.kind === "dispatch") {
      this.#take(decision.address, request, decision.expect, context.now);
      const dispatch = { address: decision.address, payload, expect: decision.expect, queuedMs: 0 };
      return { kind: "dispatched", dispatch };
    }
    // A model at its max_copies waits for its copies here: passing it on would make one more elsewhere.
    if (elsewhere !== undefined && !atCap && this.#queue.length >= BACKLOG_ROUNDS * slotsOf(taking))
      return { kind: "backlogged" };
    if (this.#queue.length >= this.#options.maxQueue) {
      const message = `every replica is busy and ${this.#queue.length} requests are already waiting; retry later`;
      return {
        kind: "queue_full",
        error: new SwitchyardError("queue_full", message, { retryAfterSeconds: 1 }),
      };
    }
    this.#queue.push({ request, enqueuedAt: context.now, deadline, payload });
    return { kind: "queued" };
  }

  /**
   * A request on `address` ended (answered or failed): its slot goes to the queue. Given the request, a
   * load of its model the dispatcher expected there is no longer pending: the answer came after the load
   * ended, and the report that came with it says whether the model is there. (Without that, a model that
   * can never load there, one missing from the repository say, would look "loading" until the pending
   * load's TTL, and policies that coalesce would hold its next requests back for it.)
   */
  release(address: string, ended?: RouteRequest): Dispatch<P>[] {
    const replica = this.#replicas.get(address);
    if (replica !== undefined) {
      replica.inFlight = Math.max(0, replica.inFlight - 1);
      if (ended !== undefined && replica.pendingLoads !== undefined) {
        const left = replica.pendingLoads.filter((load) => !sameModel(load, ended));
        if (left.length > 0) replica.pendingLoads = left;
        else delete replica.pendingLoads;
      }
    }
    return this.#pump();
  }

  /** Takes out waiting requests whose deadline has passed; the caller answers them (504). */
  expire(): P[] {
    const now = this.#options.now();
    const expired: P[] = [];
    for (let index = this.#queue.length - 1; index >= 0; index -= 1) {
      const waiting = this.#queue.items[index];
      if (waiting !== undefined && waiting.deadline <= now) {
        this.#queue.removeAt(index);
        expired.unshift(waiting.payload);
      }
    }
    return expired;
  }

  /** Takes a waiting request out (its client went away, say). */
  cancel(matches: (payload: P) => boolean): P | undefined {
    const index = this.#queue.items.findIndex((waiting) => matches(waiting.payload));
    return index < 0 ? undefined : this.#queue.removeAt(index)?.payload;
  }

  /** Earliest deadline among waiting requests: when the owner should call expire() next. */
  nextDeadline(): number | undefined {
    return this.#queue.items.reduce<number | undefined>(
      (earliest, waiting) =>
        earliest === undefined || waiting.deadline < earliest ? waiting.deadline : earliest,
      undefined,
    );
  }

  /**
   * Offers free slots to the queue again although nothing changed: call it when `nextWakeup()` says (a
   * policy's bounded wait ran out). Returns what to send.
   */
  tick(): Dispatch<P>[] {
    return this.#pump();
  }

  /**
   * When the policy wants `tick()` called next, if ever: the owner arms one timer (a Durable Object alarm)
   * for the earlier of this and `nextDeadline()`, and sets it again after every submit, release and report.
   */
  nextWakeup(): number | undefined {
    if (this.#queue.length === 0) return undefined;
    return this.#options.policy.nextWakeup?.(this.#pool(), this.#context());
  }

  #take(address: string, request: RouteRequest, expect: Dispatch<P>["expect"], now: number): void {
    const replica = this.#replicas.get(address);
    if (replica === undefined) return;
    replica.inFlight += 1;
    if (expect === "load") {
      const load: PendingLoad = { model: request.model, since: now };
      if (request.version !== undefined) load.version = request.version;
      replica.pendingLoads = [...(replica.pendingLoads ?? []), load];
    }
  }

  #pump(): Dispatch<P>[] {
    const dispatched: Dispatch<P>[] = [];
    if (this.#queue.length === 0) return dispatched;
    const context = this.#context();
    const pool = this.#pool();
    const { policy } = this.#options;
    for (const replica of this.#replicas.values()) {
      while (this.#queue.length > 0 && hasRoomUnder(replica, capacityUnder(policy, replica))) {
        const waiting = this.#pick(replica, pool, context);
        if (waiting === undefined) break;
        const expect = holds(replica, waiting.request)
          ? "hit"
          : isLoading(replica, waiting.request)
            ? "loading"
            : "load";
        this.#take(replica.address, waiting.request, expect, context.now);
        dispatched.push({
          address: replica.address,
          payload: waiting.payload,
          expect,
          queuedMs: context.now - waiting.enqueuedAt,
        });
      }
    }
    return dispatched;
  }

  /**
   * The request the policy gives a free slot of `replica`, taken out of the queue. A replica is offered only
   * the requests it may take: for models its agent serves, and not for a model at its max_copies that it
   * holds no copy of (the policy's index points into that line).
   */
  #pick(replica: ReplicaView, pool: PoolView, context: RoutingContext): Waiting<P> | undefined {
    const { serves: models } = replica;
    const pins = replica.state.loaded.some((loaded) => loaded.pinned);
    if (models === undefined && this.#caps.size === 0 && !pins) {
      const index = this.#options.policy.pickQueued(replica, pool, context);
      return index >= 0 ? this.#queue.removeAt(index) : undefined;
    }
    const offered = (model: string) =>
      (models === undefined || models.has(model)) &&
      (hasCopy(replica, model) || (!this.#atCap(model) && this.#hasRoom(replica, model)));
    const queue = this.#queue.items.filter((waiting) => offered(waiting.request.model));
    const waitingByModel = new Map([...this.#queue.byModel].filter(([model]) => offered(model)));
    const index = this.#options.policy.pickQueued(replica, { ...pool, queue, waitingByModel }, context);
    const chosen = index >= 0 ? queue[index] : undefined;
    return chosen === undefined ? undefined : this.#queue.removeAt(this.#queue.items.indexOf(chosen));
  }

  /** Whether any of `replicas` has a slot free under the policy's capacity. */
  #anyFree(replicas: readonly ReplicaView[]): boolean {
    return replicas.some((replica) => hasRoomUnder(replica, capacityUnder(this.#options.policy, replica)));
  }

  /** Keeps the model's max_copies as its latest request gives it (none: the model has no cap any more). */
  #noteCap(request: RouteRequest): void {
    if (request.maxCopies === undefined) this.#caps.delete(request.model);
    else this.#caps.set(request.model, request.maxCopies);
  }

  /**
   * Whether a copy of the model could be loaded on the replica beside the models pinned there (pinned copies
   * are never evicted, so an agent refuses a load they leave no room for).
   */
  #hasRoom(replica: ReplicaView, model: string): boolean {
    if (!replica.state.loaded.some((loaded) => loaded.pinned)) return true;
    return fitsBesidePins({ state: replica.state, bytes: this.#modelBytes.get(model) }, model);
  }

  /** Whether the model has as many copies as its max_copies allows (loaded, loading, or a load on its way). */
  #atCap(model: string): boolean {
    const cap = this.#caps.get(model);
    if (cap === undefined) return false;
    // A draining replica's copy goes with it: it does not count against the cap.
    let copies = 0;
    for (const replica of this.#replicas.values())
      if (!replica.draining && hasCopy(replica, model)) copies += 1;
    return copies >= cap;
  }

  /** A fresh round for each decision: submit, pump, or wakeup. */
  #context(): RoutingContext {
    return {
      now: this.#options.now(),
      random: this.#options.random ?? Math.random,
      demand: this.#demand,
      modelBytes: this.#modelBytes,
      round: new RoutingRound(),
    };
  }

  /** The replicas and the live queue (pickQueued's index points into it as picks take requests out). */
  #pool(): PoolView {
    return { replicas: this.replicas(), queue: this.#queue.items, waitingByModel: this.#queue.byModel };
  }
}

/** Whether the replica holds a copy of the model (any version): loaded, loading, or a load on its way. */
const hasCopy = (replica: ReplicaView, model: string) =>
  holds(replica, { model }) || isLoadingOrPending(replica, { model });

/** The replicas whose addresses are not in `avoid`. */
const notAvoided = (replicas: readonly ReplicaView[], avoid: readonly string[]) =>
  replicas.filter((replica) => !avoid.includes(replica.address));

/** Whether `replica`'s agent can load the model `request` asks for. */
const serves = (replica: ReplicaView, request: RouteRequest) =>
  replica.serves === undefined || replica.serves.has(request.model);

const sameModel = (load: PendingLoad, request: RouteRequest) =>
  load.model === request.model && (load.version === undefined || load.version === request.version);

/** Loads the dispatcher caused that this report does not show yet, and that are not too old to matter. */
function stillPending(
  loads: readonly PendingLoad[] | undefined,
  state: ReplicaState,
  now: number,
): PendingLoad[] {
  if (loads === undefined) return [];
  const shown = (load: PendingLoad) =>
    [...state.loaded, ...state.loading, ...state.failed].some(
      (model) => model.name === load.model && (load.version === undefined || model.version === load.version),
    );
  return loads.filter((load) => now - load.since < PENDING_LOAD_TTL_MS && !shown(load));
}

function slotsOf(replicas: readonly ReplicaView[]): number {
  return replicas.reduce((sum, replica) => sum + replica.state.maxConcurrency, 0);
}
