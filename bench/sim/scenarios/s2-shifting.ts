import type { Scenario } from "../scenario.ts";
import { s1 } from "./s1-zipf.ts";

/** S1 whose popularity ranks are reshuffled every 60 s: yesterday's hot models go cold at once. */
export const s2: Scenario = {
  ...s1,
  id: "S2",
  title: "Popularity shifting every 60 s",
  summary: "S1, with the Zipf ranks reshuffled every 60 s; 60k requests (about 4 minutes, 3 shifts)",
  popularity: { zipfExponent: 1.1, shiftEveryMs: 60_000 },
  requests: 60_000,
  seed: 2,
};
