import type { ModelTimings } from "../../shared/protocol/replica-state.ts";

// Exponentially weighted: recent runs matter most (a GPU warms up, a host gets busier), yet one outlier
// does not swing the router. The first sample is taken as is.
const WEIGHT_OF_NEW_SAMPLE = 0.2;

const blend = (average: number | undefined, sample: number) =>
  average === undefined ? sample : average + WEIGHT_OF_NEW_SAMPLE * (sample - average);

/** Running averages of load and inference time per model key ("name:version") on one replica. */
export class ModelTimingsTable {
  readonly #byModel = new Map<string, ModelTimings>();

  #entry(key: string): ModelTimings {
    let entry = this.#byModel.get(key);
    if (entry === undefined) {
      entry = { loads: 0, runs: 0 };
      this.#byModel.set(key, entry);
    }
    return entry;
  }

  recordLoad(key: string, milliseconds: number): void {
    const entry = this.#entry(key);
    entry.loadMs = blend(entry.loadMs, milliseconds);
    entry.loads += 1;
  }

  recordRun(key: string, milliseconds: number): void {
    const entry = this.#entry(key);
    entry.inferMs = blend(entry.inferMs, milliseconds);
    entry.runs += 1;
  }

  toJSON(): Record<string, ModelTimings> {
    return Object.fromEntries([...this.#byModel].map(([key, timings]) => [key, { ...timings }]));
  }
}
