import type { CacheEntryView, CacheLimits } from "../cache/admission.ts";
import { modelKey } from "../model-names.ts";
import type { PoolEstimates } from "./estimates.ts";
import type { ReplicaView } from "./types.ts";

/**
 * A replica's cache as the admission logic sees it, rebuilt from its report: what the router predicts a
 * load there would evict is what the agent's cache will evict, because both ask shared/cache.
 */
export function cacheEntriesOf(
  replica: ReplicaView,
  now: number,
  estimates: PoolEstimates,
): CacheEntryView[] {
  const entries: CacheEntryView[] = replica.state.loaded.map((model) => ({
    key: modelKey(model),
    bytes: model.bytes,
    lastUsedAt: now - model.idleMs,
    inFlight: model.inFlight,
    state: "loaded",
    pinned: model.pinned,
  }));
  const loading = [
    ...replica.state.loading,
    ...(replica.pendingLoads ?? []).map((load) => ({ name: load.model, version: load.version ?? "" })),
  ];
  // A model counts once: a pending load the report already shows (loading or loaded) is the same load.
  const names = new Set(replica.state.loaded.map((model) => model.name));
  for (const model of loading) {
    if (names.has(model.name)) continue;
    names.add(model.name);
    const key = modelKey(model);
    const bytes = estimates.bytes({ model: model.name }) ?? 0;
    entries.push({ key, bytes, lastUsedAt: now, inFlight: 1, state: "loading" });
  }
  return entries;
}

export const cacheLimitsOf = (replica: ReplicaView): CacheLimits => ({
  maxModels: replica.state.maxModels,
  maxBytes: replica.state.memoryBudgetBytes,
});
