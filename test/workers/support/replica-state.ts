import type { ReplicaState } from "../../../shared/protocol/replica-state.ts";

/** A replica's reported state with sensible defaults; `loaded` lists model names (version "1"). */
export function replicaState(
  options: { id?: string; maxConcurrency?: number; loaded?: string[]; loading?: string[] } = {},
): ReplicaState {
  return {
    id: options.id ?? "0",
    device: "cpu",
    maxConcurrency: options.maxConcurrency ?? 1,
    inFlight: 0,
    queued: 0,
    maxModels: 3,
    memoryBudgetBytes: 1e9,
    memoryUsedBytes: 0,
    loaded: (options.loaded ?? []).map((name) => ({
      name,
      version: "1",
      bytes: 1000,
      inFlight: 0,
      idleMs: 0,
      pinned: false,
    })),
    loading: (options.loading ?? []).map((name) => ({ name, version: "1" })),
    timings: {},
    failed: [],
  };
}
