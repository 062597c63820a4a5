import type { ModelRef, ReplicaState } from "../protocol/replica-state.ts";

/**
 * Whether a replica could hold the model at all: it may hold models, and the model fits its memory budget
 * (a size not known yet is taken to fit; the load then says).
 */
export const replicaFits = (state: ReplicaState, bytes: number | undefined) =>
  state.maxModels >= 1 && (bytes === undefined || bytes <= state.memoryBudgetBytes);

/**
 * Why a request for a model no replica holds could not be served by these replicas now, or undefined when
 * it would be: one of them must be able to hold it, and its last load must not have failed on all of those.
 * The agent's readiness and the gateway's (across its agents) both answer with this.
 */
export function whyNotServable(
  model: ModelRef & { bytes?: number | undefined },
  replicas: readonly ReplicaState[],
): string | undefined {
  if (replicas.length === 0) return "there is no replica";
  const able = replicas.filter((state) => replicaFits(state, model.bytes));
  if (able.length === 0) {
    if (model.bytes === undefined || replicas.every((state) => state.maxModels < 1))
      return "no replica may hold a model (--max-models is below 1)";
    const largest = Math.max(...replicas.map((state) => state.memoryBudgetBytes));
    return `it takes ${model.bytes} bytes, more than any replica's memory budget (${largest} bytes)`;
  }
  const failures = able.map(
    (state) =>
      state.failed.find((failed) => failed.name === model.name && failed.version === model.version)?.reason,
  );
  if (failures.every((reason) => reason !== undefined)) return `its last load failed: ${failures[0]}`;
  return undefined;
}
