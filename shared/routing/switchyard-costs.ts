import type { CacheEntryView } from "../cache/admission.ts";
import { planAdmission } from "../cache/admission.ts";
import { parseModelKey, requestedModelKey } from "../model-names.ts";
import { cacheEntriesOf, cacheLimitsOf } from "./cache-view.ts";
import { PoolEstimates } from "./estimates.ts";
import { freeSlots, holds, isLoadingOrPending, pendingLoadOf, usable } from "./replica-facts.ts";
import type { PoolView, QueuedView, ReplicaView, RouteRequest, RoutingContext } from "./types.ts";
import { lineOrder } from "./waiting-line.ts";

/**
 * How far ahead an eviction's harm is counted: the chance that the evicted model is asked for again within
 * this horizon. One gateway deadline (DEFAULT_TIMEOUT_SECONDS, 60 s): what happens later is another story.
 */
export const EVICTION_HORIZON_MS = 60_000;

/**
 * A copy may go without harm when the other copies can take its model's demand at this utilization of
 * their slots at most (they also serve their other models, hence well below 1).
 */
export const ABSORBABLE_UTILIZATION = 0.5;

export interface WaitingForModel {
  oldest: QueuedView;
  count: number;
}

/**
 * The expected costs Switchyard weighs, in milliseconds of somebody's waiting, from the replicas' reports
 * and the dispatcher's measured demand. Built once per decision; it memoises what it computes, since the
 * pool does not change during one decision.
 */
export class SwitchyardCosts {
  readonly estimates: PoolEstimates;
  readonly now: number;
  readonly #context: RoutingContext;
  readonly #replicas: readonly ReplicaView[];
  #waiting: WaitingForModel[] | undefined;
  readonly #waitingByModel: ReadonlyMap<string, readonly QueuedView[]>;
  #holders: Map<string, ReplicaView[]> | undefined;
  #loading: Set<string> | undefined;
  readonly #entries = new Map<string, CacheEntryView[]>();
  /** By replica, then by the newcomer's size: the plan (and so its harm) depends on nothing else. */
  readonly #plans = new Map<ReplicaView, Map<number, { victims: string[]; harm?: number } | undefined>>();
  readonly #rates = new Map<string, number>();

  constructor(pool: PoolView, context: RoutingContext) {
    this.estimates = new PoolEstimates(pool.replicas, context.modelBytes);
    this.now = context.now;
    this.#context = context;
    this.#replicas = pool.replicas.filter(usable);
    this.#waitingByModel = pool.waitingByModel;
  }

  ratePerMs(model: string): number {
    let rate = this.#rates.get(model);
    if (rate === undefined) {
      rate = (this.#context.demand?.ratePerSecond(model, this.now) ?? 0) / 1000;
      this.#rates.set(model, rate);
    }
    return rate;
  }

  /** The queue by model, each oldest first (the dispatcher's index). */
  waitingByModel(): ReadonlyMap<string, readonly QueuedView[]> {
    return this.#waitingByModel;
  }

  /** The models waiting, in the line's order of their first request (background ones last). */
  waiting(): WaitingForModel[] {
    if (this.#waiting !== undefined) return this.#waiting;
    const waiting: WaitingForModel[] = [];
    for (const line of this.waitingByModel().values()) {
      const oldest = line[0];
      if (oldest !== undefined) waiting.push({ oldest, count: line.length });
    }
    waiting.sort((a, b) => lineOrder(a.oldest, b.oldest));
    this.#waiting = waiting;
    return waiting;
  }

  /** The waiting the model's queued requests have done so far, added up (ms). */
  waitedFor(model: string): number {
    let waited = 0;
    for (const waiting of this.waitingByModel().get(model) ?? []) waited += this.now - waiting.enqueuedAt;
    return waited;
  }

  /** How long the model's oldest waiting request has waited (ms); 0 when none waits. */
  waitedLongest(model: string): number {
    const oldest = this.waitingByModel().get(model)?.[0];
    return oldest === undefined ? 0 : this.now - oldest.enqueuedAt;
  }

  /** How many requests wait for this model. */
  waitingFor(model: string): number {
    return this.waitingByModel().get(model)?.length ?? 0;
  }

  holdersOf(request: RouteRequest): ReplicaView[] {
    if (this.#holders === undefined) {
      this.#holders = new Map();
      for (const replica of this.#replicas) {
        for (const model of replica.state.loaded) {
          const list = this.#holders.get(model.name);
          if (list === undefined) this.#holders.set(model.name, [replica]);
          else if (!list.includes(replica)) list.push(replica);
        }
      }
    }
    return (this.#holders.get(request.model) ?? []).filter((replica) => holds(replica, request));
  }

  heldAnywhere(request: RouteRequest): boolean {
    return this.holdersOf(request).length > 0;
  }

  /** A load of the model is under way somewhere in the pool (coalescing: never start a second). */
  loadingAnywhere(request: RouteRequest): boolean {
    if (this.#loading === undefined) {
      this.#loading = new Set();
      for (const replica of this.#replicas) {
        for (const model of replica.state.loading) this.#loading.add(model.name);
        for (const load of replica.pendingLoads ?? []) this.#loading.add(load.model);
      }
    }
    if (!this.#loading.has(request.model)) return false;
    return this.#replicas.some((replica) => !holds(replica, request) && isLoadingOrPending(replica, request));
  }

  /** Replicas that hold the model or are loading it. */
  copiesOf(request: RouteRequest): ReplicaView[] {
    const holders = this.holdersOf(request);
    if (!this.loadingAnywhere(request)) return holders;
    return [
      ...holders,
      ...this.#replicas.filter((replica) => !holds(replica, request) && isLoadingOrPending(replica, request)),
    ];
  }

  /**
   * Until a request for `request`'s model, arriving now, would start on `replica`, which holds the model or
   * is loading it: the rest of the load, or the slot wait behind what is running there and what waits in
   * the queue for the models it holds (a freed slot takes those first, oldest first).
   */
  waitOnCopy(replica: ReplicaView, request: RouteRequest): number {
    const slotMs = this.estimates.slotMs(replica);
    const capacity = replica.state.maxConcurrency;
    let queuedForIt = 0;
    const counted = new Set<string>();
    for (const model of [...replica.state.loaded.map((each) => each.name), request.model]) {
      if (counted.has(model)) continue;
      counted.add(model);
      queuedForIt += this.waitingFor(model);
    }
    const ahead = replica.inFlight + queuedForIt - capacity + 1;
    const slotWait = ahead <= 0 ? 0 : (ahead * slotMs) / capacity;
    if (holds(replica, request)) return slotWait;
    return Math.max(slotWait, this.remainingLoadMs(replica, request));
  }

  /** The shortest wait on any copy; Infinity when there is none. */
  waitForCopy(request: RouteRequest): number {
    let best = Infinity;
    for (const copy of this.copiesOf(request)) best = Math.min(best, this.waitOnCopy(copy, request));
    return best;
  }

  /** The rest of a load in progress: measured start when the dispatcher caused it, else half a load. */
  remainingLoadMs(replica: ReplicaView, request: RouteRequest): number {
    const loadMs = this.estimates.loadMs(replica, request);
    const pending = pendingLoadOf(replica, request);
    return pending === undefined ? loadMs / 2 : Math.max(0, loadMs - (this.now - pending.since));
  }

  /**
   * The models loading `request`'s model on `replica` would evict, as shared/cache's admission plan picks
   * them (the agent's own logic); undefined when it cannot be admitted now (work in flight or a load holds
   * the room) or at all (too big, or pinned models hold the room until they are unpinned).
   */
  victimsOf(replica: ReplicaView, request: RouteRequest): string[] | undefined {
    return this.#plan(replica, request)?.victims;
  }

  #plan(replica: ReplicaView, request: RouteRequest): { victims: string[]; harm?: number } | undefined {
    // The plan depends on the newcomer's size only (a model that is not here is never its own victim).
    const bytes = this.estimates.bytes(request) ?? 0;
    let bySize = this.#plans.get(replica);
    if (bySize === undefined) {
      bySize = new Map();
      this.#plans.set(replica, bySize);
    }
    if (bySize.has(bytes)) return bySize.get(bytes);
    let entries = this.#entries.get(replica.address);
    if (entries === undefined) {
      entries = cacheEntriesOf(replica, this.now, this.estimates);
      this.#entries.set(replica.address, entries);
    }
    const plan = planAdmission(
      entries,
      { key: requestedModelKey(request.model, request.version), bytes },
      cacheLimitsOf(replica),
    );
    const planned =
      plan.kind === "admit" ? { victims: plan.evict.map((key) => parseModelKey(key).name) } : undefined;
    bySize.set(bytes, planned);
    return planned;
  }

  /**
   * The cost of what loading `request`'s model on `replica` evicts: the extra waiting its victims' future
   * requests can expect (ms). Infinity when it cannot be admitted now.
   */
  evictionHarm(replica: ReplicaView, request: RouteRequest): number {
    const plan = this.#plan(replica, request);
    if (plan === undefined) return Infinity;
    if (plan.harm === undefined) {
      let harm = 0;
      for (const victim of plan.victims) harm += this.victimHarm(victim, replica);
      plan.harm = harm;
    }
    return plan.harm;
  }

  /**
   * Admission by frequency (TinyLFU's rule, Einziger et al.): the newcomer may displace only models that
   * are not wanted more than it is, its waiting requests counting as demand spread over `backlogMs`. This
   * keeps a stream of requests for unpopular models from flushing the popular ones, whatever their recency.
   */
  admits(replica: ReplicaView, request: RouteRequest, backlogMs: number): boolean {
    const victims = this.victimsOf(replica, request);
    if (victims === undefined) return false;
    const wanted = this.ratePerMs(request.model) + this.waitingFor(request.model) / backlogMs;
    return victims.every((victim) => this.othersAbsorb(victim, replica) || this.ratePerMs(victim) <= wanted);
  }

  /**
   * What evicting `model` from `replica` costs the requests to come. Nothing when another replica holds it
   * too and can take its demand. Otherwise, if it is asked for again within the horizon (probability 1 - e^(-rate x horizon)), the
   * next request waits a full load, and those arriving during that load wait half of one on average.
   */
  victimHarm(model: string, replica: ReplicaView): number {
    const request = { model };
    if (this.othersAbsorb(model, replica)) return 0;
    const rate = this.ratePerMs(model);
    const loadMs = this.estimates.loadMs(replica, request);
    const askedAgain = 1 - Math.exp(-rate * EVICTION_HORIZON_MS);
    return askedAgain * loadMs * (1 + (rate * loadMs) / 2);
  }

  /** Other copies of `model` than the one on `replica` can take its whole demand comfortably. */
  othersAbsorb(model: string, replica: ReplicaView): boolean {
    const request = { model };
    let perMs = 0;
    for (const other of this.holdersOf(request)) {
      if (other !== replica) perMs += other.state.maxConcurrency / this.estimates.inferMs(other, request);
    }
    return perMs > 0 && this.ratePerMs(model) <= ABSORBABLE_UTILIZATION * perMs;
  }

  /** The share of the pool's slots in use (requests running or loading their model). */
  utilization(): number {
    let used = 0;
    let slots = 0;
    for (const replica of this.#replicas) {
      used += Math.min(replica.inFlight, replica.state.maxConcurrency);
      slots += replica.state.maxConcurrency;
    }
    return slots === 0 ? 1 : used / slots;
  }

  /** Replicas that could start a request now. */
  withFreeSlot(): ReplicaView[] {
    return this.#replicas.filter((replica) => freeSlots(replica) > 0);
  }
}
