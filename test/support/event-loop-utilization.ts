import { performance } from "node:perf_hooks";
import { setTimeout as sleep } from "node:timers/promises";

/**
 * How busy this thread's event loop was (0 to 1) over `ms` from now, while the caller only waits: near 1
 * when something keeps it turning (a spinning HotLoop), near 0 when it sleeps in its poll.
 */
export async function utilizationOver(ms: number): Promise<number> {
  const start = performance.eventLoopUtilization();
  await sleep(ms);
  return performance.eventLoopUtilization(start).utilization;
}
