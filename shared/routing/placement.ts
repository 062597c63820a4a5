import type { ReplicaState } from "../protocol/replica-state.ts";

/** A replica a pinned copy could go to: its last state, and the model's size there when it is known. */
export interface PlacementCandidate {
  state: ReplicaState;
  bytes?: number | undefined;
}

/**
 * Where pinned copies of a model go (model control's load), best first: replicas that hold the version
 * already (nothing to read), then those with the most free memory. A replica is left out when the copy
 * would not fit beside what is pinned there: pinned models are never evicted, so only they bound it.
 * The agent's own model control and the gateway's placement across agents both order copies with this.
 */
export function placementOrder<T extends PlacementCandidate>(
  candidates: readonly T[],
  model: { name: string; version?: string | undefined },
): T[] {
  const holds = (state: ReplicaState) =>
    state.loaded.some(
      (loaded) =>
        loaded.name === model.name && (model.version === undefined || loaded.version === model.version),
    );
  const free = (state: ReplicaState) => state.memoryBudgetBytes - state.memoryUsedBytes;
  return candidates
    .filter((candidate) => fitsBesidePins(candidate, model.name))
    .sort((a, b) => Number(holds(b.state)) - Number(holds(a.state)) || free(b.state) - free(a.state));
}

/** Whether a copy of model `name` (of `bytes`, when known) fits on the replica beside the models pinned there. */
export function fitsBesidePins({ state, bytes }: PlacementCandidate, name: string): boolean {
  const pins = state.loaded.filter((loaded) => loaded.pinned && loaded.name !== name);
  const pinnedBytes = pins.reduce((sum, loaded) => sum + loaded.bytes, 0);
  return pins.length + 1 <= state.maxModels && pinnedBytes + (bytes ?? 0) <= state.memoryBudgetBytes;
}
