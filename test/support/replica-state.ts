import type { LoadedModel, ModelRef, ReplicaState } from "../../shared/protocol/replica-state.ts";

/**
 * The one builder of replica reports for tests (routing, the registry in workerd, the protocol): what an
 * agent would send, with defaults that read as "an idle CPU replica", and only the fields a test cares about
 * given. Models may be given by name (version "1", 1000 bytes) or as whole entries.
 */
export interface ReplicaStateFields extends Partial<Omit<ReplicaState, "loaded" | "loading">> {
  loaded?: ReadonlyArray<string | LoadedModel>;
  loading?: ReadonlyArray<string | ModelRef>;
}

/** A loaded model: version "1", 1000 bytes, idle, not pinned, unless told otherwise. */
export const loadedModel = (name: string, fields: Partial<LoadedModel> = {}): LoadedModel => ({
  name,
  version: "1",
  bytes: 1000,
  inFlight: 0,
  idleMs: 0,
  pinned: false,
  ...fields,
});

/** Replica "0" on the CPU: one slot, room for 3 models in 1 GB, holding what `loaded` says. */
export function replicaState(fields: ReplicaStateFields = {}): ReplicaState {
  const { loaded: loadedFields = [], loading: loadingFields = [], ...rest } = fields;
  const loaded = loadedFields.map((model) => (typeof model === "string" ? loadedModel(model) : model));
  return {
    id: "0",
    seq: 0,
    device: "cpu",
    maxConcurrency: 1,
    inFlight: 0,
    queued: 0,
    maxModels: 3,
    memoryBudgetBytes: 1e9,
    memoryUsedBytes: loaded.reduce((sum, model) => sum + model.bytes, 0),
    loaded,
    loading: loadingFields.map((model) =>
      typeof model === "string" ? { name: model, version: "1" } : model,
    ),
    timings: {},
    failed: [],
    ...rest,
  };
}
