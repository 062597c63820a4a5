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
 * place, so a report keeps the figures it was given), and what goes to the gateway is only what it may not
 * have (ReplicaState.timings).
 */
export class ModelTimingsTable {
  readonly #byModel: Record<string, ModelTimings> = {};
  /** Keys whose figures changed since the last state frame's report (takeUnsent). */
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
   * What a result frame's state carries: the figures of `held` (the models loaded or loading) and of every model
   * whose figures changed since the last state frame (takeUnsent). A result's state may be dropped on its way
   * (an answer after its deadline, a registry out of reach), so it does not count as sent.
   */
  unsent(held: Iterable<string>): Record<string, ModelTimings> {
    const report: Record<string, ModelTimings> = {};
    for (const key of [...held, ...this.#changed]) {
      const timings = this.#byModel[key];
      if (timings !== undefined) report[key] = timings;
    }
    return report;
  }

  /**
   * What a state frame carries (it goes straight to the registry): unsent(held), after which those changes
   * count as sent; every model's figures when `whole` (the agent sends them all now and then, so that
   * whatever the gateway lost comes back).
   */
  takeUnsent(held: Iterable<string>, whole: boolean): Record<string, ModelTimings> {
    const report = whole ? { ...this.#byModel } : this.unsent(held);
    this.#changed.clear();
    return report;
  }
}
