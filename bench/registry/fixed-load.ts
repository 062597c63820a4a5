/**
 * A closed loop of a fixed number of requests at a fixed concurrency: each of `concurrency` clients sends its
 * next request when its last one is answered, until `requests` have been sent. A fixed count (not a fixed
 * time) so that CPU per request is total CPU over a known number of requests, with nothing cut off at the
 * window's edges.
 */
import { percentile } from "../gpu/measure.ts";

export interface FixedLoadResult {
  requests: number;
  concurrency: number;
  /** Answered with 200. */
  ok: number;
  failed: number;
  /** The first few failures, as their messages. */
  failures: string[];
  wallMs: number;
  requestsPerSecond: number;
  latencyMs: { p50: number; p99: number; mean: number; max: number };
}

export async function fixedLoad(
  requests: number,
  concurrency: number,
  send: () => Promise<unknown>,
): Promise<FixedLoadResult> {
  const latencies: number[] = [];
  const failures: string[] = [];
  let failed = 0;
  let issued = 0;
  const started = performance.now();
  const client = async () => {
    while (issued < requests) {
      issued += 1;
      const sent = performance.now();
      try {
        await send();
        latencies.push(performance.now() - sent);
      } catch (error) {
        failed += 1;
        if (failures.length < 10) failures.push(error instanceof Error ? error.message : String(error));
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, requests) }, client));
  const wallMs = performance.now() - started;
  const sorted = [...latencies].sort((a, b) => a - b);
  return {
    requests,
    concurrency,
    ok: latencies.length,
    failed,
    failures,
    wallMs,
    requestsPerSecond: (latencies.length * 1000) / wallMs,
    latencyMs: {
      p50: percentile(sorted, 50),
      p99: percentile(sorted, 99),
      mean: latencies.reduce((sum, value) => sum + value, 0) / Math.max(1, latencies.length),
      max: sorted.at(-1) ?? Number.NaN,
    },
  };
}
