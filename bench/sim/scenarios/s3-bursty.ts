import type { Scenario } from "../scenario.ts";
import { s1 } from "./s1-zipf.ts";

/** S1 with bursty arrivals: bursts at 1.5x the mean rate (120% of capacity) for 5 s, calmer spells of 15 s between (so that the no-miss bound absorbs a burst within the gateway queue limit). */
export const s3: Scenario = {
  ...s1,
  id: "S3",
  title: "Bursty arrivals",
  summary: "S1, arrivals in bursts of 1.5x the mean (5 s on average) between calm spells (15 s), mean 80%",
  arrivals: { kind: "bursty", burstFactor: 1.5, burstMs: 5_000, calmMs: 15_000 },
  seed: 3,
};
