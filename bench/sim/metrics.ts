/** How one request ended. */
export const OUTCOME = { pending: 0, ok: 1, timedOut: 2, rejected: 3, unavailable: 4 } as const;

export interface RunSummary {
  policy: string;
  requests: number;
  /** Requests served on a replica that held their model since before they arrived, over all requests. */
  hitRate: number;
  /** Latency percentiles (ms); a request that failed counts as the deadline (it got its error no sooner). */
  p50: number;
  p95: number;
  p99: number;
  /** Requests answered in time per second, from the first arrival to the last answer. */
  throughput: number;
  /** Replica time spent loading models, summed over replicas (s). */
  loadSeconds: number;
  loads: number;
  rejected: number;
  timedOut: number;
  unavailable: number;
  /** One model's own figures against the rest's, when the run was asked to follow it (SimulateOptions.focus). */
  focus?: FocusSummary;
}

export interface FocusSummary {
  model: string;
  requests: number;
  hitRate: number;
  p50: number;
  p99: number;
  /** The other models' hit rate. */
  othersHitRate: number;
}

export interface RunRecord {
  latency: Float64Array;
  outcome: Uint8Array;
  hit: Uint8Array;
  deadlineMs: number;
  firstArrival: number;
  lastAnswer: number;
  loadMs: number;
  loads: number;
}

export function summarise(policy: string, record: RunRecord): RunSummary {
  const n = record.outcome.length;
  let hits = 0;
  let ok = 0;
  const counts = { timedOut: 0, rejected: 0, unavailable: 0 };
  const latencies = new Float64Array(n);
  for (let i = 0; i < n; i += 1) {
    const outcome = record.outcome[i];
    if (record.hit[i] === 1 && outcome === OUTCOME.ok) hits += 1;
    if (outcome === OUTCOME.ok) ok += 1;
    else if (outcome === OUTCOME.timedOut) counts.timedOut += 1;
    else if (outcome === OUTCOME.rejected) counts.rejected += 1;
    else if (outcome === OUTCOME.unavailable) counts.unavailable += 1;
    // A failed request counts as the deadline, or as long as its client waited when that was longer (the live
    // benchmark's client can wait past it; the simulator's never does).
    const latency = record.latency[i] as number;
    latencies[i] = outcome === OUTCOME.ok ? latency : Math.max(record.deadlineMs, latency);
  }
  latencies.sort();
  const span = Math.max(1, record.lastAnswer - record.firstArrival);
  return {
    policy,
    requests: n,
    hitRate: hits / n,
    p50: percentile(latencies, 0.5),
    p95: percentile(latencies, 0.95),
    p99: percentile(latencies, 0.99),
    throughput: (ok * 1000) / span,
    loadSeconds: record.loadMs / 1000,
    loads: record.loads,
    ...counts,
  };
}

/** The figures of the requests for one model (`picked`), and the others' hit rate. */
export function summariseFocus(
  model: string,
  record: RunRecord,
  picked: (request: number) => boolean,
): FocusSummary {
  const latencies: number[] = [];
  let hits = 0;
  let otherHits = 0;
  let others = 0;
  for (let i = 0; i < record.outcome.length; i += 1) {
    const hit = record.hit[i] === 1 && record.outcome[i] === OUTCOME.ok;
    if (!picked(i)) {
      others += 1;
      if (hit) otherHits += 1;
      continue;
    }
    if (hit) hits += 1;
    const latency = record.latency[i] as number;
    latencies.push(record.outcome[i] === OUTCOME.ok ? latency : Math.max(record.deadlineMs, latency));
  }
  const sorted = Float64Array.from(latencies).sort();
  return {
    model,
    requests: sorted.length,
    hitRate: sorted.length === 0 ? 0 : hits / sorted.length,
    p50: percentile(sorted, 0.5),
    p99: percentile(sorted, 0.99),
    othersHitRate: others === 0 ? 0 : otherHits / others,
  };
}

/** Nearest-rank percentile of sorted values. */
export function percentile(sorted: Float64Array, fraction: number): number {
  if (sorted.length === 0) return Number.NaN;
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(fraction * sorted.length) - 1));
  return sorted[rank] as number;
}
