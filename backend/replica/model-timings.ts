import type { ModelTimings } from "../../shared/protocol/replica-state.ts";

// Exponentially weighted: recent runs matter most (a GPU warms up, a host gets busier), yet one outlier
// does not swing the router. The first sample is taken as is.
const WEIGHT_OF_NEW_SAMPLE = 0.2;

const blend = (average: number | undefined, sample: number) =>
  average === undefined ? sample : average + WEIGHT_OF_NEW_SAMPLE * (sample - average);

/**
 * Running averages of load and inference time per model key ("name:version") on one replica. A replica that
 * ran thousands of models reads its state after every change, so nothing here costs per model known: the
 * table is one object that every state shares (each figure is replaced when it changes, never changed in
 * place, so a report keeps what it was given), and what goes to the gateway is only what it may not have.
 */
export class ModelTimingsTable {
  readonly #byModel: Record<string, ModelTimings> = {};
  /** Keys whose figures changed since the last report (takeReport). */
  readonly #changed = new Set<string>();

  #replace(key: string, change: (entry: ModelTimings) => ModelTimings): void {
    this.#byModel[key] = change(this.#byModel[key] ?? { loads: 0, runs: 0 });
    this.#changed.add(key);
  }

  recordLoad(key: string, milliseconds: number): void {
    this.#replace(key, (entry) => ({
      ...entry,
      loadMs: blend(entry.loadMs, milliseconds),
      loads: entry.loads + 1,
    }));
  }

  recordRun(key: string, milliseconds: number): void {
    this.#replace(key, (entry) => ({
      ...entry,
      inferMs: blend(entry.inferMs, milliseconds),
      runs: entry.runs + 1,
    }));
  }

  /** Every model's figures, as they are when read: the table itself, not a copy. */
  all(): Readonly<Record<string, ModelTimings>> {
    return this.#byModel;
  }

  /**
   * What a state sent to the gateway carries (ReplicaState.timings): the figures of every model whose figures
   * changed since the previous report, which this one now is (a model evicted since goes once more), and
   * those of `current`, the models loaded or loading, so that a report lost on its way is made good by the next.
   */
  takeReport(current: Iterable<string>): Record<string, ModelTimings> {
    const report: Record<string, ModelTimings> = {};
    for (const key of [...current, ...this.#changed]) {
      const timings = this.#byModel[key];
      if (timings !== undefined) report[key] = timings;
    }
    this.#changed.clear();
    return report;
  }
}
