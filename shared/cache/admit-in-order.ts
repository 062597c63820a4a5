import {
  type CacheEntryView,
  type CacheLimits,
  leastRecentlyUsedFirst,
  planAdmission,
  type VictimOrder,
} from "./admission.ts";

/** A model waiting for room in a cache, with the size planned for it. */
export interface WaitingAdmission {
  key: string;
  bytes: number;
}

export type AdmissionOutcome =
  /** Evict these, then load `key`: from then on it counts as loading. */
  | { key: string; kind: "admit"; evict: string[] }
  /** `key` can never fit: its waiters fail. */
  | { key: string; kind: "reject"; reason: string; cause: "size" | "pins" };

/**
 * Which waiting models a cache admits now, first come first served: each is planned against the entries as
 * the admissions before it left them (their victims gone, themselves loading), and the first that must
 * wait holds up everyone behind it, so a big model is not starved by small ones overtaking it.
 *
 * Returns one outcome per admitted or rejected model, in `waiting` order; the models after the last outcome
 * keep waiting. The agent's model cache and the simulator's replicas both carry out these decisions, so the
 * two can never disagree on what a replica holds.
 */
export function admitInOrder(
  entries: readonly CacheEntryView[],
  waiting: readonly WaitingAdmission[],
  limits: CacheLimits,
  victimOrder: VictimOrder = leastRecentlyUsedFirst,
): AdmissionOutcome[] {
  let current = [...entries];
  const outcomes: AdmissionOutcome[] = [];
  for (const incoming of waiting) {
    const plan = planAdmission(current, incoming, limits, victimOrder);
    if (plan.kind === "wait") break;
    if (plan.kind === "reject") {
      outcomes.push({ key: incoming.key, kind: "reject", reason: plan.reason, cause: plan.cause });
      continue;
    }
    outcomes.push({ key: incoming.key, kind: "admit", evict: plan.evict });
    const evicted = new Set(plan.evict);
    current = current.filter((entry) => !evicted.has(entry.key));
    // Loading entries are never victims, so its recency and leases do not matter for later plans.
    current.push({ key: incoming.key, bytes: incoming.bytes, lastUsedAt: 0, inFlight: 0, state: "loading" });
  }
  return outcomes;
}
