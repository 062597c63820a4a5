import { fileURLToPath } from "node:url";
import type { ServiceDefinition } from "@grpc/proto-loader";
import { loadSync } from "@grpc/proto-loader";
import { LOADER_OPTIONS } from "./grpc-messages.ts";

/**
 * The protocol's .proto, beside this module in the sources and beside the bundle that includes it
 * (scripts/build-bundles.ts copies it to dist/): the agent's server, the benchmark's client and the tests'
 * client all read this one file.
 */
export const INFERENCE_PROTO = fileURLToPath(new URL("./inference.proto", import.meta.url));

/** The calls whose messages carry tensors: served where the call is read (grpc-service.ts). */
export const INFER_CALLS: ReadonlySet<string> = new Set(["ModelInfer", "ModelStreamInfer"]);

let definition: ServiceDefinition | undefined;

/** inference.GRPCInferenceService, read once, its messages as grpc-messages.ts types them. */
export function inferenceService(): ServiceDefinition {
  definition ??= loadSync(INFERENCE_PROTO, LOADER_OPTIONS)[
    "inference.GRPCInferenceService"
  ] as ServiceDefinition;
  return definition;
}
