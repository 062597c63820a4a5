import { modelKey } from "../../shared/model-names.ts";
import { emptyStatistics, type ModelStatistics, type StatDuration } from "../../shared/oip/statistics.ts";
import type { ModelRef } from "../../shared/protocol/replica-state.ts";

const NS_PER_MS = 1e6;

/**
 * One replica's inference statistics per model version, in the statistics extension's form
 * (shared/oip/statistics.ts). The replica records each request as it ends and each run as it completes;
 * records outlive the model's eviction, as Triton's outlive an unload.
 */
export class ModelStatisticsBook {
  readonly #records = new Map<string, ModelStatistics>();

  #record(model: ModelRef): ModelStatistics {
    const key = modelKey(model);
    let record = this.#records.get(key);
    if (record === undefined) {
      record = emptyStatistics(model.name, model.version);
      this.#records.set(key, record);
    }
    return record;
  }

  /** A request answered: its time in the replica, its wait, and the rows it counts as (1 unless it batches). */
  succeeded(model: ModelRef, timings: { totalMs: number; queueMs: number }, inferences: number): void {
    const record = this.#record(model);
    record.inference_count += inferences;
    record.last_inference = Date.now();
    addMs(record.inference_stats.success, timings.totalMs);
    addMs(record.inference_stats.queue, timings.queueMs);
  }

  failed(model: ModelRef, totalMs: number): void {
    addMs(this.#record(model).inference_stats.fail, totalMs);
  }

  /** One run of the model: `batchSize` rows (0 when it takes no batch dimension) and its three phases. */
  executed(
    model: ModelRef,
    batchSize: number,
    phases: { inputMs: number; inferMs: number; outputMs: number },
  ): void {
    const record = this.#record(model);
    record.execution_count += 1;
    addMs(record.inference_stats.compute_input, phases.inputMs);
    addMs(record.inference_stats.compute_infer, phases.inferMs);
    addMs(record.inference_stats.compute_output, phases.outputMs);
    let batch = record.batch_stats.find((candidate) => candidate.batch_size === batchSize);
    if (batch === undefined) {
      batch = {
        batch_size: batchSize,
        compute_input: { count: 0, ns: 0 },
        compute_infer: { count: 0, ns: 0 },
        compute_output: { count: 0, ns: 0 },
      };
      record.batch_stats.push(batch);
    }
    addMs(batch.compute_input, phases.inputMs);
    addMs(batch.compute_infer, phases.inferMs);
    addMs(batch.compute_output, phases.outputMs);
  }

  /** Copies of the records of `name` (every model when undefined), of `version` when given. */
  snapshot(name?: string, version?: string): ModelStatistics[] {
    return [...this.#records.values()]
      .filter(
        (record) =>
          (name === undefined || record.name === name) &&
          (version === undefined || record.version === version),
      )
      .map((record) => structuredClone(record));
  }
}

function addMs(into: StatDuration, milliseconds: number): void {
  into.count += 1;
  into.ns += Math.round(milliseconds * NS_PER_MS);
}
