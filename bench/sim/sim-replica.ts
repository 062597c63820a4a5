import { ModelTimingsTable } from "../../backend/replica/model-timings.ts";
import {
  type CacheEntryView,
  type CacheLimits,
  expiredEntries,
  overflowVictims,
  type VictimOrder,
} from "../../shared/cache/admission.ts";
import { admitInOrder } from "../../shared/cache/admit-in-order.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import type { Prng } from "./prng.ts";
import type { ModelSpec } from "./scenario.ts";

/** A request as the simulator follows it. */
export interface SimRequest {
  id: number;
  model: string;
  arrivedAt: number;
  deadline: number;
}

export interface ReplicaBehaviour {
  concurrency: number;
  limits: CacheLimits;
  /** Idle models are unloaded after this long; 0 keeps them until evicted (the agent's default). */
  keepAliveMs: number;
  victimOrder: VictimOrder;
  /** One load at a time, eviction included (Ray Serve's multiplexed replica holds one lock for both). */
  serialLoads: boolean;
}

export interface ReplicaHooks {
  now(): number;
  schedule(at: number, run: () => void): void;
  /** A request finished; `hit` when its model was resident here since before it arrived in the pool. */
  finished(request: SimRequest, hit: boolean): void;
  /** Anything a report would show changed. */
  changed(): void;
}

interface Entry {
  readonly spec: ModelSpec;
  /** A pinned copy (min_copies): never a victim, never expires. */
  pinned: boolean;
  phase: "waiting" | "loading" | "loaded";
  lastUsedAt: number;
  /** Leases: requests running on it, and those waiting for its load. */
  inFlight: number;
  /** Requests holding a slot here until its load lands. */
  waiters: SimRequest[];
  /** When its current stay in memory began (the load landed). */
  residentSince: number;
}

/**
 * One simulated replica: concurrency slots with a local line (like the agent's Slots), and a model cache
 * run by the agent's own admission logic (shared/cache: admitInOrder, overflowVictims, expiredEntries) with
 * the agent's rules: a request holds its slot while its model loads, concurrent requests share one load,
 * models in use are never evicted, and timings are averaged by the agent's ModelTimingsTable.
 */
export class SimReplica {
  readonly address: string;
  readonly #behaviour: ReplicaBehaviour;
  readonly #hooks: ReplicaHooks;
  readonly #catalogue: ReadonlyMap<string, ModelSpec>;
  readonly #rng: Prng;
  readonly #entries = new Map<string, Entry>();
  readonly #roomLine: Entry[] = [];
  readonly #slotLine: SimRequest[] = [];
  readonly #timings = new ModelTimingsTable();
  #running = 0;
  #loadsInProgress = 0;
  /** Total time spent loading models here (ms). */
  loadingMs = 0;
  loads = 0;

  constructor(
    address: string,
    behaviour: ReplicaBehaviour,
    catalogue: ReadonlyMap<string, ModelSpec>,
    rng: Prng,
    hooks: ReplicaHooks,
  ) {
    this.address = address;
    this.#behaviour = behaviour;
    this.#catalogue = catalogue;
    this.#rng = rng;
    this.#hooks = hooks;
  }

  /**
   * Puts a model in memory before the run starts (the no-miss bound preloads every model; a serving policy's
   * min_copies pins one here).
   */
  preload(model: string, options: { pinned?: boolean } = {}): void {
    const spec = this.#spec(model);
    this.#entries.set(model, {
      spec,
      pinned: options.pinned ?? false,
      phase: "loaded",
      lastUsedAt: -Infinity,
      inFlight: 0,
      waiters: [],
      residentSince: -Infinity,
    });
  }

  /** A request the router sent here: it runs when a slot is free, else waits in line here. */
  accept(request: SimRequest): void {
    if (this.#running < this.#behaviour.concurrency) this.#start(request);
    else this.#slotLine.push(request);
    this.#hooks.changed();
  }

  #start(request: SimRequest): void {
    this.#running += 1;
    const now = this.#hooks.now();
    const known = this.#entries.get(request.model);
    if (known?.phase === "loaded") {
      known.inFlight += 1;
      known.lastUsedAt = now;
      this.#infer(known, request, known.residentSince <= request.arrivedAt);
      return;
    }
    const entry = known ?? this.#bringIn(request.model);
    entry.inFlight += 1;
    entry.lastUsedAt = now;
    entry.waiters.push(request);
    // The agent's cache sizes a model (asynchronously) before planning room; here sizes are known.
    if (entry.phase === "waiting") this.#admit();
  }

  #bringIn(model: string): Entry {
    const entry: Entry = {
      spec: this.#spec(model),
      pinned: false,
      phase: "waiting",
      lastUsedAt: this.#hooks.now(),
      inFlight: 0,
      waiters: [],
      residentSince: Infinity,
    };
    this.#entries.set(model, entry);
    this.#roomLine.push(entry);
    return entry;
  }

  /** The agent's cache admission: first come first served, victims chosen by shared/cache. */
  #admit(): void {
    if (this.#behaviour.serialLoads && this.#loadsInProgress > 0) return;
    const outcomes = admitInOrder(
      this.#views(),
      this.#roomLine.map((entry) => ({ key: entry.spec.name, bytes: entry.spec.bytes })),
      this.#behaviour.limits,
      this.#behaviour.victimOrder,
    );
    for (const outcome of outcomes) {
      const entry = this.#roomLine.shift();
      if (entry === undefined) break;
      if (outcome.kind === "reject") {
        throw new Error(`scenario error: ${outcome.reason}`);
      }
      for (const victim of outcome.evict) this.#entries.delete(victim);
      this.#beginLoad(entry);
      if (this.#behaviour.serialLoads) break;
    }
  }

  #beginLoad(entry: Entry): void {
    entry.phase = "loading";
    this.#loadsInProgress += 1;
    const duration = this.#rng.uniform(entry.spec.loadMs.min, entry.spec.loadMs.max);
    this.#hooks.schedule(this.#hooks.now() + duration, () => this.#loaded(entry, duration));
  }

  #loaded(entry: Entry, duration: number): void {
    const now = this.#hooks.now();
    this.#loadsInProgress -= 1;
    this.loadingMs += duration;
    this.loads += 1;
    this.#timings.recordLoad(entry.spec.name, duration);
    entry.phase = "loaded";
    entry.residentSince = now;
    entry.lastUsedAt = now;
    for (const request of entry.waiters.splice(0)) this.#infer(entry, request, false);
    this.#settle();
    this.#hooks.changed();
  }

  #infer(entry: Entry, request: SimRequest, hit: boolean): void {
    const duration = entry.spec.inferMs;
    this.#hooks.schedule(this.#hooks.now() + duration, () => this.#finish(entry, request, duration, hit));
  }

  #finish(entry: Entry, request: SimRequest, duration: number, hit: boolean): void {
    entry.inFlight -= 1;
    entry.lastUsedAt = this.#hooks.now();
    this.#timings.recordRun(entry.spec.name, duration);
    this.#running -= 1;
    this.#hooks.finished(request, hit);
    this.#settle();
    const next = this.#slotLine.shift();
    if (next !== undefined) this.#start(next);
    this.#hooks.changed();
  }

  /** As the agent's cache does after every release and load: expire, fit the limits, admit. */
  #settle(): void {
    const views = this.#views();
    const now = this.#hooks.now();
    for (const key of expiredEntries(views, now, this.#behaviour.keepAliveMs)) this.#entries.delete(key);
    for (const key of overflowVictims(this.#views(), this.#behaviour.limits, this.#behaviour.victimOrder)) {
      this.#entries.delete(key);
    }
    this.#admit();
  }

  #views(): CacheEntryView[] {
    const views: CacheEntryView[] = [];
    for (const entry of this.#entries.values()) {
      if (entry.phase === "waiting") continue;
      views.push({
        key: entry.spec.name,
        bytes: entry.spec.bytes,
        lastUsedAt: entry.lastUsedAt,
        inFlight: entry.inFlight,
        state: entry.phase,
        pinned: entry.pinned,
      });
    }
    return views;
  }

  #spec(model: string): ModelSpec {
    const spec = this.#catalogue.get(model);
    if (spec === undefined) throw new Error(`unknown model ${model}`);
    return spec;
  }

  /** The report an agent would send now. */
  state(): ReplicaState {
    const now = this.#hooks.now();
    const loaded: ReplicaState["loaded"] = [];
    const loading: ReplicaState["loading"] = [];
    let memoryUsedBytes = 0;
    for (const entry of this.#entries.values()) {
      if (entry.phase === "waiting") continue;
      memoryUsedBytes += entry.spec.bytes;
      if (entry.phase === "loading") {
        loading.push({ name: entry.spec.name, version: "1" });
        continue;
      }
      loaded.push({
        name: entry.spec.name,
        version: "1",
        bytes: entry.spec.bytes,
        inFlight: entry.inFlight,
        idleMs: Number.isFinite(entry.lastUsedAt) ? Math.max(0, now - entry.lastUsedAt) : 1e12,
        pinned: entry.pinned,
      });
    }
    return {
      id: this.address,
      // The simulator hands states to the router in order: no snapshot can overtake another.
      seq: 0,
      device: "sim",
      maxConcurrency: this.#behaviour.concurrency,
      inFlight: this.#running,
      queued: this.#slotLine.length,
      maxModels: this.#behaviour.limits.maxModels,
      memoryBudgetBytes: this.#behaviour.limits.maxBytes,
      memoryUsedBytes,
      loaded,
      loading,
      timings: timingsByKey(this.#timings),
      failed: [],
    };
  }
}

/** The agent keys timings by "name:version"; every simulated model is version "1". */
function timingsByKey(table: ModelTimingsTable): ReplicaState["timings"] {
  const byKey: ReplicaState["timings"] = {};
  for (const [name, timings] of Object.entries(table.all())) byKey[`${name}:1`] = timings;
  return byKey;
}
