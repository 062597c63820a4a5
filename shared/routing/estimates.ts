import { parseModelKey, requestedModelKey } from "../model-names.ts";
import type { ModelTimings, ReplicaState } from "../protocol/replica-state.ts";
import { versionMatches } from "./replica-facts.ts";
import type { ReplicaView, RouteRequest } from "./types.ts";

/**
 * Guesses used until the pool has measured anything (milliseconds). They only order the very first
 * decisions: every load and run an agent reports replaces them.
 */
export const DEFAULT_LOAD_MS = 2_000;
export const DEFAULT_INFER_MS = 100;

interface Measured {
  version: string;
  timings: ModelTimings;
}

/**
 * One state's timings by model name, computed once per state object. A state's figures do not change once it
 * is routed on: where a replica's successive states share one timings table (the registry's running copy,
 * the agent's own), whoever takes new figures into it makes a new state object for them.
 */
interface ReportIndex {
  byModel: Map<string, Measured[]>;
  /** Mean inference time over every model it ran. */
  meanInferMs: number | undefined;
}

const indexes = new WeakMap<ReplicaState, ReportIndex>();

function indexOf(state: ReplicaState): ReportIndex {
  const known = indexes.get(state);
  if (known !== undefined) return known;
  const byModel = new Map<string, Measured[]>();
  const infers: number[] = [];
  for (const [key, timings] of Object.entries(state.timings)) {
    const { name: model, version } = parseModelKey(key);
    const measured = { version, timings };
    const list = byModel.get(model);
    if (list === undefined) byModel.set(model, [measured]);
    else list.push(measured);
    if (timings.inferMs !== undefined) infers.push(timings.inferMs);
  }
  const index = { byModel, meanInferMs: mean(infers) };
  indexes.set(state, index);
  return index;
}

function mean(values: readonly number[]): number | undefined {
  if (values.length === 0) return undefined;
  let sum = 0;
  for (const value of values) sum += value;
  return sum / values.length;
}

type Pick = (timings: ModelTimings) => number | undefined;
const loadOf: Pick = (timings) => timings.loadMs;
const inferOf: Pick = (timings) => timings.inferMs;

/**
 * How long a model takes to load and to run, from the averages the agents measure (ReplicaState.timings):
 * this replica's own figure first, else the pool's for that model, else (for loads) the model's size at the
 * pool's measured milliseconds per byte, else the pool's mean, else the defaults above. Lazy and memoised:
 * one decision asks about a few models only.
 */
export class PoolEstimates {
  readonly #replicas: readonly ReplicaView[];
  readonly #knownBytes: ReadonlyMap<string, number> | undefined;
  #bytes: Map<string, number> | undefined;
  #meanBytes: number | undefined;
  #pooled:
    | { msPerByte: number | undefined; loadMs: number | undefined; inferMs: number | undefined }
    | undefined;
  /** By model (and version, when asked for one), then by the replica's address ("" for the pool's). */
  readonly #loads = new Map<string, Map<string, number | undefined>>();
  readonly #infers = new Map<string, Map<string, number | undefined>>();

  /** `knownBytes`: sizes seen before (the Dispatcher remembers them across evictions). */
  constructor(replicas: readonly ReplicaView[], knownBytes?: ReadonlyMap<string, number>) {
    this.#replicas = replicas;
    this.#knownBytes = knownBytes;
  }

  /**
   * Bytes the model takes once loaded: as a replica holds it now, else as it was last seen, else the mean
   * size of the models seen (an unknown model is planned as a typical one, not as free).
   */
  bytes(request: RouteRequest): number | undefined {
    if (this.#bytes === undefined) {
      this.#bytes = new Map();
      for (const replica of this.#replicas) {
        for (const model of replica.state.loaded) this.#bytes.set(model.name, model.bytes);
      }
      const sizes = [...(this.#knownBytes?.values() ?? []), ...this.#bytes.values()];
      this.#meanBytes = mean(sizes);
    }
    return this.#bytes.get(request.model) ?? this.#knownBytes?.get(request.model) ?? this.#meanBytes;
  }

  loadMs(replica: ReplicaView | undefined, request: RouteRequest): number {
    const own = replica === undefined ? undefined : this.#measured(request, replica, loadOf);
    if (own !== undefined) return own;
    const pooled = this.#measured(request, undefined, loadOf);
    if (pooled !== undefined) return pooled;
    const bytes = this.bytes(request);
    const { msPerByte, loadMs } = this.#pool();
    if (bytes !== undefined && msPerByte !== undefined) return bytes * msPerByte;
    return loadMs ?? DEFAULT_LOAD_MS;
  }

  inferMs(replica: ReplicaView | undefined, request: RouteRequest): number {
    return (
      (replica === undefined ? undefined : this.#measured(request, replica, inferOf)) ??
      this.#measured(request, undefined, inferOf) ??
      this.#pool().inferMs ??
      DEFAULT_INFER_MS
    );
  }

  /** Mean time one request holds a slot on this replica, over the models it has run. */
  slotMs(replica: ReplicaView): number {
    return indexOf(replica.state).meanInferMs ?? this.#pool().inferMs ?? DEFAULT_INFER_MS;
  }

  /** One replica's figure for the model, or the pool's mean over every replica that measured it. */
  #measured(request: RouteRequest, replica: ReplicaView | undefined, pick: Pick): number | undefined {
    const memos = pick === loadOf ? this.#loads : this.#infers;
    const key = requestedModelKey(request.model, request.version);
    let memo = memos.get(key);
    if (memo === undefined) {
      memo = new Map();
      memos.set(key, memo);
    }
    const address = replica?.address ?? "";
    if (memo.has(address)) return memo.get(address);
    const values: number[] = [];
    for (const each of replica === undefined ? this.#replicas : [replica]) {
      for (const measured of indexOf(each.state).byModel.get(request.model) ?? []) {
        const value = pick(measured.timings);
        if (value !== undefined && versionMatches(request, measured.version)) values.push(value);
      }
    }
    const result = mean(values);
    memo.set(address, result);
    return result;
  }

  /** Pool-wide fallbacks, computed only when a model has no measurement of its own. */
  #pool() {
    if (this.#pooled !== undefined) return this.#pooled;
    const perByte: number[] = [];
    const loads: number[] = [];
    const infers: number[] = [];
    for (const replica of this.#replicas) {
      const sizes = new Map(replica.state.loaded.map((model) => [model.name, model.bytes]));
      for (const [model, list] of indexOf(replica.state).byModel) {
        for (const { timings } of list) {
          if (timings.loadMs !== undefined) {
            loads.push(timings.loadMs);
            const bytes = sizes.get(model) ?? this.#knownBytes?.get(model);
            if (bytes !== undefined && bytes > 0) perByte.push(timings.loadMs / bytes);
          }
          if (timings.inferMs !== undefined) infers.push(timings.inferMs);
        }
      }
    }
    this.#pooled = { msPerByte: mean(perByte), loadMs: mean(loads), inferMs: mean(infers) };
    return this.#pooled;
  }
}
