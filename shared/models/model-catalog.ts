import { modelNotFound, versionNotFound } from "../errors.ts";
import { compareModelEntries, compareModelVersions, highestModelVersion } from "../model-names.ts";
import type { ModelRef, ReplicaState } from "../protocol/replica-state.ts";

/**
 * Every model version the pool knows, with its state as the repository index shows it: the versions in
 * the gateway's R2 repository, those the connected agents' own repositories offer, and any an agent reports
 * loading or loaded. The state is what the replicas hold: READY (loaded somewhere), LOADING, or
 * UNAVAILABLE with the reason ("unloaded", or why its last load failed). Pure, so the index, the metadata
 * and the readiness endpoints agree on what exists.
 */
export type ModelState = "READY" | "LOADING" | "UNAVAILABLE";

export interface CatalogEntry {
  name: string;
  version: string;
  state: ModelState;
  reason: string;
}

export function catalog(
  repositories: readonly ModelRef[],
  replicas: readonly ReplicaState[],
): CatalogEntry[] {
  const entries = new Map<string, CatalogEntry>();
  const entry = (name: string, version: string) => {
    const key = `${name}/${version}`;
    let found = entries.get(key);
    if (found === undefined) {
      found = { name, version, state: "UNAVAILABLE", reason: "unloaded" };
      entries.set(key, found);
    }
    return found;
  };
  for (const model of repositories) entry(model.name, model.version);
  // Weakest first, so that a version loaded anywhere ends READY whatever other replicas say.
  for (const replica of replicas) {
    for (const failed of replica.failed)
      Object.assign(entry(failed.name, failed.version), { reason: failed.reason });
  }
  for (const replica of replicas) {
    for (const loading of replica.loading)
      Object.assign(entry(loading.name, loading.version), { state: "LOADING", reason: "loading" });
  }
  for (const replica of replicas) {
    for (const loaded of replica.loaded)
      Object.assign(entry(loaded.name, loaded.version), { state: "READY", reason: "" });
  }
  return [...entries.values()].sort(compareModelEntries);
}

const STRENGTH: Record<ModelState, number> = { UNAVAILABLE: 0, LOADING: 1, READY: 2 };

/**
 * The index of a pool whose registry is sharded, from each shard's: a version is as ready as the readiest
 * shard says (as catalog() ranks replicas), and an unavailable one keeps the reason of a failed load over
 * "unloaded".
 */
export function mergeCatalogs(catalogs: readonly (readonly CatalogEntry[])[]): CatalogEntry[] {
  const entries = new Map<string, CatalogEntry>();
  for (const entry of catalogs.flat()) {
    const key = `${entry.name}/${entry.version}`;
    const known = entries.get(key);
    const stronger =
      known === undefined ||
      STRENGTH[entry.state] > STRENGTH[known.state] ||
      (entry.state === known.state && known.reason === "unloaded" && entry.reason !== "unloaded");
    if (stronger) entries.set(key, { ...entry });
  }
  return [...entries.values()].sort(compareModelEntries);
}

/** One model as the metadata, readiness, configuration and statistics endpoints see it. */
export interface ModelView {
  name: string;
  /** Every known version, ascending. */
  versions: string[];
  /** The version asked for, or the default one (the highest). */
  version: string;
}

/** The model and version a client asked for; 404 in the words both servers use when nobody knows it. */
export function viewModel(
  entries: readonly CatalogEntry[],
  name: string,
  version: string | undefined,
): ModelView {
  const versions = entries
    .filter((entry) => entry.name === name)
    .map((entry) => entry.version)
    .sort(compareModelVersions);
  if (versions.length === 0) throw modelNotFound(name);
  const chosen = version ?? highestModelVersion(versions);
  if (chosen === undefined || !versions.includes(chosen))
    throw versionNotFound(name, version ?? "", versions);
  return { name, versions, version: chosen };
}
