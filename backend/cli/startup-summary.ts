import { GPU_MODEL_MEMORY_SHARE } from "../replica/model-memory-budget.ts";
import type { ReplicaInfo, StartupInfo } from "../startup-info.ts";
import { formatSize } from "./size.ts";

// The startup facts (backend/startup-info.ts) as a block of lines for people, on the terminal.

/** Where a GPU replica's budget came from, when not from --max-model-memory. */
const GPU_SOURCES: Partial<Record<ReplicaInfo["memorySource"], string>> = {
  "gpu-memory": ` (${GPU_MODEL_MEMORY_SHARE * 100}% of the GPU's memory)`,
  fallback: " (the GPU's memory could not be read: set --max-model-memory)",
};

export function summaryLines(info: StartupInfo): string[] {
  const devices = [...new Set(info.replicas.map((replica) => replica.device))];
  const row = (label: string, value: string) => `  ${label.padEnd(10)} ${value}`;
  return [
    `switchyard-agent ${info.version} starting as "${info.name}"${info.configFile === undefined ? "" : ` (config ${info.configFile})`}`,
    row(
      "models",
      `${info.models}${info.cacheDir === undefined ? "" : `  (downloads cached in ${info.cacheDir})`}`,
    ),
    ...(info.gateway === undefined
      ? []
      : [row("gateway", `${info.gateway.url}  (pool ${info.gateway.pool})`)]),
    ...(info.standalone === undefined
      ? []
      : [
          row(
            "serving",
            `${info.standalone}  (standalone OIP v2, ${httpOn(info.httpThreads ?? 0)}${info.sharedMemory === true ? ", system shared memory for clients on this host" : ""})`,
          ),
        ]),
    ...(info.grpc === undefined
      ? []
      : [row("grpc", `${info.grpc}  (OIP v2 GRPCInferenceService, ${grpcOn(info.httpThreads ?? 0)})`)]),
    ...(info.metrics === undefined ? [] : [row("metrics", info.metrics)]),
    row("replicas", `${info.replicas.length} on ${devices.join(", ")}`),
    ...info.replicas.map(
      (replica) =>
        `    #${replica.id} ${replica.device.padEnd(7)} ${[
          `models ≤ ${formatSize(replica.memoryBytes)}${GPU_SOURCES[replica.memorySource] ?? ""}, ≤ ${replica.maxModels} loaded`,
          `${replica.maxConcurrency} requests at once`,
          replica.maxBatchSize > 1 ? `batches ≤ ${replica.maxBatchSize}` : "no batching",
          ...(replica.threads === undefined
            ? []
            : [`${replica.threads} thread${replica.threads === 1 ? "" : "s"}`]),
        ].join(" · ")}`,
    ),
  ];
}

/** gRPC is read where HTTP is: on the intake threads, which hand all but inference to the main thread. */
function grpcOn(threads: number): string {
  return threads === 0
    ? "on the main thread"
    : `inference on ${threads} thread${threads === 1 ? "" : "s"}, the rest on the main thread`;
}

function httpOn(threads: number): string {
  return threads === 0 ? "HTTP on the main thread" : `HTTP on ${threads} thread${threads === 1 ? "" : "s"}`;
}
