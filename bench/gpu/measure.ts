/** Small measuring tools shared by the GPU benchmark's parts. */

export interface Summary {
  count: number;
  p50: number;
  p90: number;
  p99: number;
  mean: number;
}

export function percentile(values: readonly number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

/** The middle value, the mean of the two middle ones for an even count (percentile's p50 takes the upper); NaN for none. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = Math.floor(sorted.length / 2);
  if (sorted.length === 0) return Number.NaN;
  return sorted.length % 2 === 1
    ? (sorted[middle] as number)
    : ((sorted[middle - 1] as number) + (sorted[middle] as number)) / 2;
}

export function summarize(values: readonly number[]): Summary {
  const mean = values.reduce((sum, value) => sum + value, 0) / Math.max(1, values.length);
  return {
    count: values.length,
    p50: percentile(values, 50),
    p90: percentile(values, 90),
    p99: percentile(values, 99),
    mean,
  };
}

export interface LoadResult {
  concurrency: number;
  seconds: number;
  completed: number;
  /** Answers over the whole loop, warm-up included (to compare with counters read before and after). */
  answered: number;
  failed: number;
  throughput: number;
  latency: Summary;
  /** Mean requests per session run, where the caller reports it. */
  meanBatch?: number;
  firstError?: string;
  /** Each recorded latency (ms), where the caller asked for them (to merge loops run apart: mergeLoads). */
  samples?: number[];
}

/**
 * A closed loop: `concurrency` clients each send a request as soon as their last one answered, for
 * `warmupS` seconds unrecorded, then `seconds` recorded. `send` resolves with the batch size that served the
 * request, when known.
 */
export async function closedLoop(
  concurrency: number,
  warmupS: number,
  seconds: number,
  send: () => Promise<number | undefined>,
  options: { keepSamples?: boolean } = {},
): Promise<LoadResult> {
  const start = performance.now();
  const measureFrom = start + warmupS * 1000;
  const stopAt = measureFrom + seconds * 1000;
  const latencies: number[] = [];
  const batches: number[] = [];
  let failed = 0;
  let answered = 0;
  let firstError: string | undefined;
  const client = async () => {
    while (performance.now() < stopAt) {
      const sent = performance.now();
      try {
        const batch = await send();
        const done = performance.now();
        answered += 1;
        // Answers that land inside the window count, whenever they were sent: long batches under heavy load
        // would otherwise leave a short window with nothing in it.
        if (done >= measureFrom && done <= stopAt) {
          latencies.push(done - sent);
          if (batch !== undefined) batches.push(batch);
        }
      } catch (error) {
        failed += 1;
        firstError ??= error instanceof Error ? error.message : String(error);
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, client));
  return {
    concurrency,
    seconds,
    completed: latencies.length,
    answered,
    failed,
    throughput: latencies.length / seconds,
    latency: summarize(latencies),
    ...(batches.length === 0
      ? {}
      : { meanBatch: batches.reduce((sum, size) => sum + size, 0) / batches.length }),
    ...(firstError === undefined ? {} : { firstError }),
    ...(options.keepSamples === true ? { samples: latencies } : {}),
  };
}

/**
 * Closed loops that ran side by side over the same window (in several threads) as one: their clients
 * together, percentiles over every sample (each loop must have kept them).
 */
export function mergeLoads(loads: readonly LoadResult[]): LoadResult {
  const samples = loads.flatMap((load) => load.samples ?? []);
  const seconds = loads[0]?.seconds ?? 0;
  const firstError = loads.find((load) => load.firstError !== undefined)?.firstError;
  return {
    concurrency: loads.reduce((sum, load) => sum + load.concurrency, 0),
    seconds,
    completed: samples.length,
    answered: loads.reduce((sum, load) => sum + load.answered, 0),
    failed: loads.reduce((sum, load) => sum + load.failed, 0),
    throughput: samples.length / Math.max(seconds, Number.MIN_VALUE),
    latency: summarize(samples),
    ...(firstError === undefined ? {} : { firstError }),
  };
}

export const round = (value: number, digits = 2) =>
  Number.isFinite(value) ? Number(value.toFixed(digits)) : value;

export const MiB = 2 ** 20;
export const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
