import {
  GATEWAY_DEADLINE_MS,
  GATEWAY_QUEUE_LIMIT,
  GiB,
  type Scenario,
  uniformCatalogue,
} from "../scenario.ts";

/**
 * The seeds' case: 4 replicas of 4 slots holding 3 models each, 40 models of one architecture (load 2 s
 * +-20%, inference 50 ms), Zipf 1.1 popularity, Poisson arrivals at 80% of the hit-only capacity.
 */
export const s1: Scenario = {
  id: "S1",
  title: "Zipf 1.1 over 40 models, 80% load",
  summary:
    "4 replicas x 3 models x 4 slots; 40 models, load 2 s +-20%, inference 50 ms; Poisson; 20k requests",
  replicas: 4,
  concurrency: 4,
  maxModels: 3,
  maxBytes: 16 * GiB,
  models: uniformCatalogue(40, { bytes: 2 * GiB, loadMs: { min: 1_600, max: 2_400 }, inferMs: 50 }),
  loadFraction: 0.8,
  arrivals: { kind: "poisson" },
  popularity: { zipfExponent: 1.1 },
  requests: 20_000,
  deadlineMs: GATEWAY_DEADLINE_MS,
  maxQueue: GATEWAY_QUEUE_LIMIT,
  seed: 1,
};
