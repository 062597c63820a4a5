/**
 * The statistics extension in Triton's JSON form (`GET /v2/models[/{m}[/versions/{v}]]/stats`), which
 * tritonclient's `get_inference_statistics` and perf_analyzer read. Durations are cumulative nanoseconds.
 * The agent keeps one record per model version and replica (backend/replica/model-statistics.ts); the agent's
 * answer merges its replicas' records and the gateway's merges its agents' answers, with `mergeStatistics`.
 *
 *   success         requests answered, and their time inside the server (queue + load + compute)
 *   fail            requests that failed, and the time they took
 *   queue           time waiting for a slot and for a batch
 *   compute_input   time preparing a run's inputs (stacking a batch)
 *   compute_infer   time of the runs themselves
 *   compute_output  time splitting a run's outputs back into each request's rows
 *   cache_hit/miss  Triton's response cache, which Switchyard does not have: always zero
 * `inference_count` counts batch rows for models that batch (as Triton does) and requests otherwise;
 * `execution_count` counts runs, so their ratio is the mean batch.
 */
import { z } from "zod";
import { compareModelEntries } from "../model-names.ts";

const durationSchema = z.object({ count: z.int().nonnegative(), ns: z.number().nonnegative() });
export type StatDuration = z.infer<typeof durationSchema>;

export const inferenceStatsSchema = z.object({
  success: durationSchema,
  fail: durationSchema,
  queue: durationSchema,
  compute_input: durationSchema,
  compute_infer: durationSchema,
  compute_output: durationSchema,
  cache_hit: durationSchema,
  cache_miss: durationSchema,
});
export type InferenceStats = z.infer<typeof inferenceStatsSchema>;

export const batchStatsSchema = z.object({
  batch_size: z.int().nonnegative(),
  compute_input: durationSchema,
  compute_infer: durationSchema,
  compute_output: durationSchema,
});
export type BatchStats = z.infer<typeof batchStatsSchema>;

export const modelStatisticsSchema = z.object({
  name: z.string(),
  version: z.string(),
  /** Milliseconds since the epoch of the last inference; 0 when none ran. */
  last_inference: z.number().nonnegative(),
  inference_count: z.int().nonnegative(),
  execution_count: z.int().nonnegative(),
  inference_stats: inferenceStatsSchema,
  batch_stats: z.array(batchStatsSchema),
});
export type ModelStatistics = z.infer<typeof modelStatisticsSchema>;

export const statisticsResponseSchema = z.object({ model_stats: z.array(modelStatisticsSchema) });
export type StatisticsResponse = z.infer<typeof statisticsResponseSchema>;

const zero = (): StatDuration => ({ count: 0, ns: 0 });

/** A model version's record before anything ran. */
export function emptyStatistics(name: string, version: string): ModelStatistics {
  return {
    name,
    version,
    last_inference: 0,
    inference_count: 0,
    execution_count: 0,
    inference_stats: {
      success: zero(),
      fail: zero(),
      queue: zero(),
      compute_input: zero(),
      compute_infer: zero(),
      compute_output: zero(),
      cache_hit: zero(),
      cache_miss: zero(),
    },
    batch_stats: [],
  };
}

const INFERENCE_PHASES = Object.keys(emptyStatistics("", "").inference_stats) as Array<keyof InferenceStats>;
const BATCH_PHASES = ["compute_input", "compute_infer", "compute_output"] as const;

function add(into: StatDuration, from: StatDuration): void {
  into.count += from.count;
  into.ns += from.ns;
}

/**
 * Records of the same model versions summed (several replicas, several agents): one record per name and
 * version, ordered by name then version, batch sizes ascending. The inputs are left as they were.
 */
export function mergeStatistics(records: Iterable<ModelStatistics>): ModelStatistics[] {
  const merged = new Map<string, ModelStatistics>();
  for (const record of records) {
    const key = `${record.name}\u0000${record.version}`;
    let into = merged.get(key);
    if (into === undefined) {
      into = emptyStatistics(record.name, record.version);
      merged.set(key, into);
    }
    into.last_inference = Math.max(into.last_inference, record.last_inference);
    into.inference_count += record.inference_count;
    into.execution_count += record.execution_count;
    for (const phase of INFERENCE_PHASES) add(into.inference_stats[phase], record.inference_stats[phase]);
    for (const batch of record.batch_stats) {
      let target = into.batch_stats.find((candidate) => candidate.batch_size === batch.batch_size);
      if (target === undefined) {
        target = {
          batch_size: batch.batch_size,
          compute_input: zero(),
          compute_infer: zero(),
          compute_output: zero(),
        };
        into.batch_stats.push(target);
      }
      for (const phase of BATCH_PHASES) add(target[phase], batch[phase]);
    }
  }
  const sorted = [...merged.values()].sort(compareModelEntries);
  for (const record of sorted) record.batch_stats.sort((a, b) => a.batch_size - b.batch_size);
  return sorted;
}

/**
 * The records with a zeroed one added for every version in `versions` that has none (Triton answers a
 * model that never ran with zeros, and perf_analyzer expects a record), in mergeStatistics' order.
 */
export function withIdleVersions(
  records: readonly ModelStatistics[],
  versions: ReadonlyArray<{ name: string; version: string }>,
): ModelStatistics[] {
  return mergeStatistics([...records, ...versions.map((ref) => emptyStatistics(ref.name, ref.version))]);
}

/** At most `max` records, the most recently used kept, in mergeStatistics' order. */
export function mostRecentStatistics(records: readonly ModelStatistics[], max: number): ModelStatistics[] {
  if (records.length <= max) return [...records];
  const kept = [...records].sort((a, b) => b.last_inference - a.last_inference).slice(0, max);
  return mergeStatistics(kept);
}
