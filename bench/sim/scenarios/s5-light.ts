import type { Scenario } from "../scenario.ts";
import { s1 } from "./s1-zipf.ts";

/** S1 at 30% load: room to spare, where routing should cost nothing. */
export const s5: Scenario = {
  ...s1,
  id: "S5",
  title: "Light load (30%)",
  summary: "S1 at 30% of the hit-only capacity",
  loadFraction: 0.3,
  seed: 5,
};
