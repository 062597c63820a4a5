import { modelKey } from "../model-names.ts";
import type { ModelRef, ReplicaState } from "../protocol/replica-state.ts";

/**
 * What happened to a replica's models between two of its states: the events that loads, evictions and
 * failed loads are counted from. The agent sees every state change of its replicas; the gateway sees the
 * states agents report (a model loaded and evicted between two reports goes unseen there). Both count
 * with this one function, so a "load" means the same on both sides: a model that newly shows as loaded.
 */
export interface ReplicaChanges {
  /** Newly loaded (a load finished). */
  loaded: ModelRef[];
  /** Newly loading (a load started). */
  loading: ModelRef[];
  /** No longer loaded: evicted for room, idle past its keep-alive, or unloaded on request. */
  unloaded: ModelRef[];
  /** A load that failed (newly listed among the replica's failed models). */
  failed: ModelRef[];
}

const refOf = (model: ModelRef): ModelRef => ({ name: model.name, version: model.version });

function added<T extends ModelRef>(before: readonly T[], after: readonly T[]): ModelRef[] {
  const known = new Set(before.map(modelKey));
  return after.filter((model) => !known.has(modelKey(model))).map(refOf);
}

/** `before` undefined: the first state seen of this replica, which is a baseline and counts nothing. */
export function replicaChanges(before: ReplicaState | undefined, after: ReplicaState): ReplicaChanges {
  if (before === undefined) return { loaded: [], loading: [], unloaded: [], failed: [] };
  return {
    loaded: added(before.loaded, after.loaded),
    loading: added(before.loading, after.loading),
    unloaded: added(after.loaded, before.loaded),
    failed: added(before.failed, after.failed),
  };
}
