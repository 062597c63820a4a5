import { versionNotFound } from "../../shared/errors.ts";
import type { CatalogEntry } from "../../shared/models/model-catalog.ts";
import { catalog } from "../../shared/models/model-catalog.ts";
import {
  LOGGING_EXTENSION,
  OIP_EXTENSIONS,
  SYSTEM_SHARED_MEMORY_EXTENSION,
} from "../../shared/oip/extensions.ts";
import type { LoadRequest } from "../../shared/oip/model-control.ts";
import type { ModelMetadata } from "../../shared/oip/schemas.ts";
import type { ModelStatistics } from "../../shared/oip/statistics.ts";
import { type TritonModelConfig, tritonModelConfig } from "../../shared/oip/triton-model-config.ts";
import type { ModelService } from "../models/model-service.ts";
import type { ReplicaPool } from "../pool/replica-pool.ts";

/**
 * What the standalone agent says of itself and its models, and what its model control does: one answer for
 * HTTP (standalone-app.ts) and gRPC (grpc/grpc-service.ts), each only reading its request and writing this.
 */

/** The extensions the server metadata lists: shared memory only where the agent offers it. */
export function standaloneExtensions(offersSharedMemory: boolean): readonly string[] {
  return [
    ...OIP_EXTENSIONS,
    LOGGING_EXTENSION,
    ...(offersSharedMemory ? [SYSTEM_SHARED_MEMORY_EXTENSION] : []),
  ];
}

/** A model's metadata: its signature, read from the graph, and the versions the repository holds. */
export async function modelMetadata(
  models: ModelService,
  name: string,
  version: string | undefined,
): Promise<ModelMetadata> {
  const signature = await models.describe(name, version);
  const versions = (await models.versions(name)).map((entry) => entry.version);
  return {
    name: signature.name,
    versions,
    platform: "onnxruntime_onnx",
    inputs: signature.inputs,
    outputs: signature.outputs,
  };
}

/** Triton's model configuration of a model, from its graph, its declared batching and the replicas here. */
export async function modelConfig(
  models: ModelService,
  pool: ReplicaPool,
  name: string,
  version: string | undefined,
): Promise<TritonModelConfig> {
  const signature = await models.describe(name, version);
  const devices = pool.states().map((state) => state.device);
  return tritonModelConfig({ ...signature, devices });
}

/**
 * The statistics of every model (no name), of a model's versions, or of one version (404 for a version the
 * repository lacks).
 */
export async function modelStatistics(
  models: ModelService,
  name?: string,
  version?: string,
): Promise<ModelStatistics[]> {
  if (name === undefined) return models.statistics();
  const versions = (await models.versions(name)).map((entry) => entry.version);
  if (version !== undefined && !versions.includes(version)) throw versionNotFound(name, version, versions);
  return models.statistics(name, version);
}

/** The repository index (the gateway's answers from the same catalog, over its agents' replicas). */
export async function repositoryIndex(
  models: ModelService,
  pool: ReplicaPool,
  readyOnly: boolean,
): Promise<CatalogEntry[]> {
  const entries = catalog(await models.index(), pool.states());
  return readyOnly ? entries.filter((entry) => entry.state === "READY") : entries;
}

/** Model control's load: `copies` pinned copies on this agent's replicas. */
export async function loadModel(models: ModelService, name: string, load: LoadRequest): Promise<void> {
  await models.load(name, load.version, { copies: load.copies, pin: true });
}

/** Model control's unload: every version, everywhere (404 for a model the repository lacks). */
export async function unloadModel(models: ModelService, name: string): Promise<void> {
  await models.versions(name);
  await models.unload(name, undefined, { evict: true });
}
