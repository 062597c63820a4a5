import { LATENCY_BUCKETS_SECONDS } from "../../shared/metrics/latency-buckets.ts";

export { LATENCY_BUCKETS_SECONDS };

/**
 * Latency histograms as Prometheus keeps them: counts per fixed bucket (LATENCY_BUCKETS_SECONDS), a sum
 * and a count. Plain data (arrays of numbers), so they persist as JSON and travel over RPC as they are.
 */
export interface HistogramData {
  /** Observations per bucket (not cumulative); the last entry counts those above the largest bound (+Inf). */
  counts: number[];
  /** Sum of observed values, in seconds. */
  sum: number;
  count: number;
}

export function emptyHistogram(): HistogramData {
  return { counts: new Array<number>(LATENCY_BUCKETS_SECONDS.length + 1).fill(0), sum: 0, count: 0 };
}

export function observe(histogram: HistogramData, seconds: number): void {
  if (!Number.isFinite(seconds) || seconds < 0) return;
  let index = LATENCY_BUCKETS_SECONDS.findIndex((bound) => seconds <= bound);
  if (index < 0) index = LATENCY_BUCKETS_SECONDS.length;
  histogram.counts[index] = (histogram.counts[index] ?? 0) + 1;
  histogram.sum += seconds;
  histogram.count += 1;
}

/** Adds `other` into `into`. */
export function mergeInto(into: HistogramData, other: HistogramData): void {
  for (let index = 0; index < into.counts.length; index++) {
    into.counts[index] = (into.counts[index] ?? 0) + (other.counts[index] ?? 0);
  }
  into.sum += other.sum;
  into.count += other.count;
}

/**
 * The q-quantile (0 < q < 1) in seconds, or undefined without observations. Interpolates linearly inside
 * the bucket holding the rank, like Prometheus' histogram_quantile; above the largest bound it answers that
 * bound (nothing better is known).
 */
export function quantile(histogram: HistogramData, q: number): number | undefined {
  if (histogram.count === 0) return undefined;
  const rank = q * histogram.count;
  let seen = 0;
  for (let index = 0; index < histogram.counts.length; index++) {
    const inBucket = histogram.counts[index] ?? 0;
    if (inBucket > 0 && seen + inBucket >= rank) {
      const upper = LATENCY_BUCKETS_SECONDS[index];
      if (upper === undefined) return LATENCY_BUCKETS_SECONDS[LATENCY_BUCKETS_SECONDS.length - 1];
      const lower = index === 0 ? 0 : (LATENCY_BUCKETS_SECONDS[index - 1] ?? 0);
      return lower + (upper - lower) * ((rank - seen) / inBucket);
    }
    seen += inBucket;
  }
  return LATENCY_BUCKETS_SECONDS[LATENCY_BUCKETS_SECONDS.length - 1];
}
