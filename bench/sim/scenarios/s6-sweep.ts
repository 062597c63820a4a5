import type { Scenario } from "../scenario.ts";
import { s1 } from "./s1-zipf.ts";

/** The load levels S6 sweeps, as fractions of the hit-only capacity. */
export const S6_LOADS = [0.1, 0.3, 0.5, 0.7, 0.9, 1.1] as const;

/** S1 at each load level (10k requests each, to keep the sweep within the benchmark's time). */
export const s6: Scenario[] = S6_LOADS.map((loadFraction) => ({
  ...s1,
  id: `S6@${Math.round(loadFraction * 100)}%`,
  title: `Load ${Math.round(loadFraction * 100)}%`,
  summary: `S1 at ${Math.round(loadFraction * 100)}% of the hit-only capacity, 10k requests`,
  loadFraction,
  requests: 10_000,
  seed: 6,
}));
