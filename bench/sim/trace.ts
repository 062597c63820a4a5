import { Prng } from "./prng.ts";
import { hitOnlyCapacity, type Scenario } from "./scenario.ts";

/** The requests of one run: arrival times (ms) and model indices into the scenario's catalogue. */
export interface Trace {
  arrivals: Float64Array;
  models: Int32Array;
}

/**
 * The scenario's requests, the same for every policy (seeded by the scenario): arrivals from its process
 * at its load, models drawn from its Zipf popularity, reshuffled every `shiftEveryMs` when it shifts.
 */
export function buildTrace(scenario: Scenario): Trace {
  const root = new Prng(scenario.seed);
  const timing = root.fork("arrivals");
  const choice = root.fork("models");
  const shuffle = root.fork("popularity");
  const meanRatePerMs = (scenario.loadFraction * hitOnlyCapacity(scenario)) / 1000;
  const weights = zipfCumulative(scenario.models.length, scenario.popularity.zipfExponent);

  const arrivals = new Float64Array(scenario.requests);
  const models = new Int32Array(scenario.requests);
  const arrival = arrivalClock(scenario, meanRatePerMs, timing);
  let rankToModel = shuffle.permutation(scenario.models.length);
  let epoch = 0;
  for (let i = 0; i < scenario.requests; i += 1) {
    const at = arrival();
    const shift = scenario.popularity.shiftEveryMs;
    if (shift !== undefined && Math.floor(at / shift) > epoch) {
      epoch = Math.floor(at / shift);
      rankToModel = shuffle.permutation(scenario.models.length);
    }
    arrivals[i] = at;
    models[i] = rankToModel[sampleRank(weights, choice.next())] ?? 0;
  }
  return { arrivals, models };
}

function arrivalClock(scenario: Scenario, meanRatePerMs: number, rng: Prng): () => number {
  let now = 0;
  const process = scenario.arrivals;
  if (process.kind === "poisson") {
    return () => {
      now += rng.exponential(1 / meanRatePerMs);
      return now;
    };
  }
  // Rates chosen so that the time-weighted mean is the scenario's load.
  const { burstFactor, burstMs, calmMs } = process;
  const burstRate = meanRatePerMs * burstFactor;
  const calmRate = Math.max(0, (meanRatePerMs * (burstMs + calmMs) - burstRate * burstMs) / calmMs);
  let bursting = false;
  let phaseEnds = rng.exponential(calmMs);
  return () => {
    for (;;) {
      const rate = bursting ? burstRate : calmRate;
      const next = rate > 0 ? now + rng.exponential(1 / rate) : Infinity;
      if (next <= phaseEnds) {
        now = next;
        return now;
      }
      // Memoryless: restart the draw at the phase change.
      now = phaseEnds;
      bursting = !bursting;
      phaseEnds = now + rng.exponential(bursting ? burstMs : calmMs);
    }
  };
}

function zipfCumulative(count: number, exponent: number): Float64Array {
  const cumulative = new Float64Array(count);
  let total = 0;
  for (let rank = 0; rank < count; rank += 1) {
    total += 1 / (rank + 1) ** exponent;
    cumulative[rank] = total;
  }
  for (let rank = 0; rank < count; rank += 1) cumulative[rank] = (cumulative[rank] as number) / total;
  return cumulative;
}

function sampleRank(cumulative: Float64Array, u: number): number {
  let low = 0;
  let high = cumulative.length - 1;
  while (low < high) {
    const middle = (low + high) >> 1;
    if ((cumulative[middle] as number) > u) high = middle;
    else low = middle + 1;
  }
  return low;
}
