import { baselinePolicy } from "../../shared/routing/baseline.ts";
import { beladyHits } from "./belady.ts";
import type { RunSummary } from "./metrics.ts";
import type { Scenario } from "./scenario.ts";
import { simulate } from "./simulate.ts";
import type { Trace } from "./trace.ts";

export interface Bounds {
  /** Belady's offline optimum hit rate over the pool's total slots (count, or bytes). */
  beladyHitRate: number;
  /** The same trace with every model everywhere: queueing for slots only. */
  noMisses: RunSummary;
}

/** What no policy can beat on this trace. */
export function boundsOf(scenario: Scenario, trace: Trace): Bounds {
  const hits = beladyHits(
    trace.models,
    scenario.models.map((model) => model.bytes),
    { items: scenario.replicas * scenario.maxModels, bytes: scenario.replicas * scenario.maxBytes },
  );
  return {
    beladyHitRate: hits / trace.models.length,
    noMisses: simulate(scenario, trace, baselinePolicy, { noMisses: true }),
  };
}
