import { compareModelEntries, compareModelVersions, highestModelVersion } from "../../shared/model-names.ts";
import type { ModelSignature } from "../../shared/protocol/model-signatures.ts";
import type { PoolSnapshot } from "../registry/relay-types.ts";
import type { StoredVersion } from "./model-store.ts";

/**
 * What the gateway can say about models without asking an agent: the versions in its R2 repository,
 * merged with what connected agents report (agents may also serve models from their own repositories,
 * which the gateway only learns about once they load them).
 */
export type ModelState = "READY" | "LOADING" | "UNAVAILABLE";

export interface CatalogEntry {
  name: string;
  version: string;
  state: ModelState;
  reason: string;
}

export function catalog(stored: readonly StoredVersion[], pool: PoolSnapshot): CatalogEntry[] {
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
  for (const version of stored) {
    if (version.files["model.onnx"] !== undefined) entry(version.name, version.version);
  }
  const replicas = pool.agents.flatMap((agent) => agent.replicas);
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

export interface ModelView {
  name: string;
  /** Every known version, ascending. */
  versions: string[];
  /** The version asked for, or the default one (the highest). */
  version: string;
  entry: CatalogEntry;
  signature: ModelSignature | undefined;
}

/** One model as the metadata and readiness endpoints see it; undefined when nobody knows it. */
export function viewModel(
  entries: readonly CatalogEntry[],
  signatures: readonly ModelSignature[],
  name: string,
  version: string | undefined,
): ModelView | undefined {
  const known = new Set(entries.filter((entry) => entry.name === name).map((entry) => entry.version));
  for (const signature of signatures) known.add(signature.version);
  const versions = [...known].sort(compareModelVersions);
  const chosen = version ?? highestModelVersion(versions);
  if (chosen === undefined || !known.has(chosen)) return undefined;
  const entry = entries.find((candidate) => candidate.name === name && candidate.version === chosen) ?? {
    name,
    version: chosen,
    state: "UNAVAILABLE",
    reason: "unloaded",
  };
  return { name, versions, version: chosen, entry, signature: signatures.find((s) => s.version === chosen) };
}
