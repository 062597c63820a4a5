import { s1 } from "./s1-zipf.ts";
import { s2 } from "./s2-shifting.ts";
import { s3 } from "./s3-bursty.ts";
import { s4 } from "./s4-mixed-sizes.ts";
import { s5 } from "./s5-light.ts";

export { S6_LOADS, s6 } from "./s6-sweep.ts";
/** The scenarios reported one table each (S6 is the sweep, charted). */
export const SCENARIOS = [s1, s2, s3, s4, s5];
