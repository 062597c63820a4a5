import { OIP_EXTENSIONS, SYSTEM_SHARED_MEMORY_EXTENSION } from "../../shared/oip/extensions.ts";
import type { ModelMetadata } from "../../shared/oip/schemas.ts";
import type { ModelService } from "../models/model-service.ts";

/**
 * What the standalone agent says of itself and its models, the same over HTTP (standalone-app.ts) and gRPC
 * (grpc/grpc-service.ts).
 */

/** The extensions the server metadata lists: shared memory only where the agent offers it. */
export function standaloneExtensions(offersSharedMemory: boolean): readonly string[] {
  return offersSharedMemory ? [...OIP_EXTENSIONS, SYSTEM_SHARED_MEMORY_EXTENSION] : OIP_EXTENSIONS;
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
