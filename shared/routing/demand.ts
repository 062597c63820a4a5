import type { DemandView } from "./types.ts";

/**
 * How fast the measured rate forgets: an exponentially decaying count with this time constant. Ten seconds
 * smooths the noise of a few Poisson arrivals a second, and still follows popularity that shifts within a
 * minute (scenario S2 of the simulator).
 */
export const DEMAND_TIME_CONSTANT_MS = 10_000;

/** Entries whose rate decayed below this (requests per second) are forgotten, so the map stays small. */
const FORGET_BELOW_PER_SECOND = 1e-4;
const PRUNE_EVERY_RECORDS = 4096;

interface Tally {
  /** Decayed count of requests, as of `at`. */
  count: number;
  at: number;
}

/**
 * Requests per second per model, across the pool: the Dispatcher records every submitted request, and
 * policies read rates through the routing context (ModelMesh's copies above a request rate, Switchyard's
 * cost of evicting a model). Pure bookkeeping on the caller's clock, so the simulator runs it in virtual
 * time.
 */
export class DemandTracker implements DemandView {
  readonly #tallies = new Map<string, Tally>();
  readonly #timeConstantMs: number;
  #recorded = 0;

  constructor(timeConstantMs = DEMAND_TIME_CONSTANT_MS) {
    this.#timeConstantMs = timeConstantMs;
  }

  record(model: string, now: number): void {
    const tally = this.#tallies.get(model);
    if (tally === undefined) {
      this.#tallies.set(model, { count: 1, at: now });
    } else {
      tally.count = this.#decayed(tally, now) + 1;
      tally.at = Math.max(tally.at, now);
    }
    this.#recorded += 1;
    if (this.#recorded % PRUNE_EVERY_RECORDS === 0) this.#prune(now);
  }

  ratePerSecond(model: string, now: number): number {
    const tally = this.#tallies.get(model);
    return tally === undefined ? 0 : (this.#decayed(tally, now) * 1000) / this.#timeConstantMs;
  }

  /** Every model asked for lately, with its rate. */
  rates(now: number): Map<string, number> {
    const rates = new Map<string, number>();
    for (const model of this.#tallies.keys()) rates.set(model, this.ratePerSecond(model, now));
    return rates;
  }

  #decayed(tally: Tally, now: number): number {
    const elapsed = Math.max(0, now - tally.at);
    return tally.count * Math.exp(-elapsed / this.#timeConstantMs);
  }

  #prune(now: number): void {
    for (const [model, tally] of this.#tallies) {
      if ((this.#decayed(tally, now) * 1000) / this.#timeConstantMs < FORGET_BELOW_PER_SECOND) {
        this.#tallies.delete(model);
      }
    }
  }
}
