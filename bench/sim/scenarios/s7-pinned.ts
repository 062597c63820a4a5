import type { Scenario } from "../scenario.ts";
import type { Trace } from "../trace.ts";
import { s5 } from "./s5-light.ts";

/**
 * Issue 16's case: a latency-critical model that is rarely asked for shares the pool with a long tail. S1's
 * pool and catalogue at 30% load (S5), 10k requests; the critical model is the trace's 25th most requested
 * of 40, asked for about once every few seconds, so LRU evicts it between its requests and it pays a 2 s load
 * on most of them. Run twice per policy: as is, and with `min_copies: 1` for it (one pinned copy, taking one
 * of its replica's three model slots from the tail).
 */
export const s7: Scenario = {
  ...s5,
  id: "S7",
  title: "A latency-critical model with min_copies beside a long tail (30% load)",
  summary:
    "S5's pool and load, 10k requests; the 25th most requested model of 40 is latency-critical; with and without min_copies 1 for it",
  requests: 10_000,
  seed: 7,
};

/** The trace's `rank`-th most requested model (1: the most). */
export function modelOfRank(scenario: Scenario, trace: Trace, rank: number): string {
  const counts = new Array<number>(scenario.models.length).fill(0);
  for (const index of trace.models) counts[index] = (counts[index] ?? 0) + 1;
  const ranked = counts
    .map((count, index) => ({ count, index }))
    .sort((a, b) => b.count - a.count || a.index - b.index);
  const chosen = ranked[rank - 1];
  const model = chosen === undefined ? undefined : scenario.models[chosen.index];
  if (model === undefined) throw new Error(`the trace has no model of rank ${rank}`);
  return model.name;
}

export const CRITICAL_RANK = 25;
