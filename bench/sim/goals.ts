import { ANCHOR_POLICIES } from "../../shared/routing/policies.ts";
import type { Bounds } from "./bounds.ts";
import type { RunSummary } from "./metrics.ts";

export interface ScenarioResult {
  id: string;
  title: string;
  summary: string;
  bounds: Bounds;
  runs: RunSummary[];
}

/** S7: each policy without and with a serving policy pinning the critical model (min_copies 1). */
export interface PinnedResult {
  id: string;
  title: string;
  summary: string;
  /** The critical model. */
  model: string;
  rows: Array<{ without: RunSummary; pinned: RunSummary }>;
}

export interface GoalCheck {
  scenario: string;
  goal: string;
  met: boolean;
  detail: string;
}

const anchors = (runs: readonly RunSummary[]) =>
  runs.filter((run) => (ANCHOR_POLICIES as readonly string[]).includes(run.policy));

/**
 * The goals of issue 4, checked on the figures: on S1-S4 switchyard's hit rate is at least 0.95 of the
 * Belady bound and its p99 at most half the best anchor's; and in no scenario is it worse than the best
 * anchor by more than 5% (hit rate or p99).
 */
export function checkGoals(
  results: readonly ScenarioResult[],
  mainScenarios: readonly string[],
): GoalCheck[] {
  const checks: GoalCheck[] = [];
  for (const result of results) {
    const ours = result.runs.find((run) => run.policy === "switchyard");
    const theirs = anchors(result.runs);
    if (ours === undefined || theirs.length === 0) continue;
    const bestHit = Math.max(...theirs.map((run) => run.hitRate));
    const bestP99 = Math.min(...theirs.map((run) => run.p99));
    if (mainScenarios.includes(result.id)) {
      const ratio = ours.hitRate / result.bounds.beladyHitRate;
      checks.push({
        scenario: result.id,
        goal: "hit rate >= 0.95 x Belady",
        met: ratio >= 0.95,
        detail: `${ours.hitRate.toFixed(3)} / ${result.bounds.beladyHitRate.toFixed(3)} = ${ratio.toFixed(2)}`,
      });
      checks.push({
        scenario: result.id,
        goal: "p99 <= 0.5 x best anchor p99",
        met: ours.p99 <= 0.5 * bestP99,
        detail: `${seconds(ours.p99)} vs ${seconds(bestP99)}`,
      });
    }
    checks.push({
      scenario: result.id,
      goal: "hit rate >= 0.95 x best anchor",
      met: ours.hitRate >= 0.95 * bestHit,
      detail: `${ours.hitRate.toFixed(3)} vs ${bestHit.toFixed(3)}`,
    });
    checks.push({
      scenario: result.id,
      goal: "p99 <= 1.05 x best anchor p99",
      met: ours.p99 <= 1.05 * bestP99,
      detail: `${seconds(ours.p99)} vs ${seconds(bestP99)}`,
    });
  }
  return checks;
}

export const seconds = (ms: number) => `${(ms / 1000).toFixed(ms < 10_000 ? 2 : 1)} s`;
