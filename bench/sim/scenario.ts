/** One model of a scenario's catalogue. */
export interface ModelSpec {
  name: string;
  bytes: number;
  /** Each load of it takes a time drawn uniformly from this range (ms). */
  loadMs: { min: number; max: number };
  /** One inference run (ms). */
  inferMs: number;
}

export type ArrivalProcess =
  /** Poisson arrivals at a constant rate. */
  | { kind: "poisson" }
  /**
   * A two-state Markov-modulated Poisson process: bursts at `burstFactor` x the mean rate lasting
   * `burstMs` on average, between calm spells at a rate that keeps the overall mean.
   */
  | { kind: "bursty"; burstFactor: number; burstMs: number; calmMs: number };

export interface Popularity {
  /** Zipf exponent over the catalogue (rank 1 most popular). */
  zipfExponent: number;
  /** The ranks are shuffled anew this often (ms); absent: fixed. */
  shiftEveryMs?: number;
}

export interface Scenario {
  id: string;
  title: string;
  /** What it stresses, for the report. */
  summary: string;
  replicas: number;
  /** Concurrency slots per replica. */
  concurrency: number;
  /** Each replica's cache bounds. */
  maxModels: number;
  maxBytes: number;
  models: ModelSpec[];
  /** Arrival rate as a fraction of the pool's hit-only capacity (every request a hit). */
  loadFraction: number;
  arrivals: ArrivalProcess;
  popularity: Popularity;
  requests: number;
  /** The gateway's defaults: DEFAULT_TIMEOUT_SECONDS 60 and QUEUE_LIMIT 1000. */
  deadlineMs: number;
  maxQueue: number;
  seed: number;
}

/** The pool's throughput if every request were a hit: every slot busy with inference only (req/s). */
export function hitOnlyCapacity(scenario: Scenario): number {
  const meanInferMs = scenario.models.reduce((sum, model) => sum + model.inferMs, 0) / scenario.models.length;
  return (scenario.replicas * scenario.concurrency * 1000) / meanInferMs;
}

export const GATEWAY_DEADLINE_MS = 60_000;
export const GATEWAY_QUEUE_LIMIT = 1_000;
export const GiB = 2 ** 30;

/** `count` models of one architecture: same size, same load and inference times. */
export function uniformCatalogue(
  count: number,
  spec: { bytes: number; loadMs: { min: number; max: number }; inferMs: number },
): ModelSpec[] {
  return Array.from({ length: count }, (_, index) => ({
    name: `model-${String(index + 1).padStart(2, "0")}`,
    ...spec,
  }));
}
