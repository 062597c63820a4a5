import { formatSize } from "./size.ts";

/**
 * What the agent tells at start, before it loads anything: who it is, where models come from, where it
 * serves, and what each replica may do. People read it as a block (`--log-format text`); log shippers get
 * the same facts as one `agent starting` event (`--log-format json`). It never shows the token.
 */
export interface StartupInfo {
  name: string;
  version: string;
  configFile?: string;
  models: string;
  /** Where downloads are kept, when models come over http(s). */
  cacheDir?: string;
  gateway?: { url: string; pool: string };
  standalone?: string;
  metrics?: string;
  replicas: ReplicaInfo[];
}

export interface ReplicaInfo {
  id: string;
  device: string;
  memoryBytes: number;
  memorySource: "flag" | "gpu-memory" | "fallback" | "ram";
  maxModels: number;
  maxConcurrency: number;
  maxBatchSize: number;
  threads?: number;
}

/** Where a GPU replica's budget came from, when not from --max-model-memory. */
const GPU_SOURCES: Partial<Record<ReplicaInfo["memorySource"], string>> = {
  "gpu-memory": " (80% of the GPU's memory)",
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
    ...(info.standalone === undefined ? [] : [row("serving", `${info.standalone}  (standalone OIP v2)`)]),
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

/** The same facts as log fields. */
export function summaryFields(info: StartupInfo): Record<string, unknown> {
  return {
    name: info.name,
    version: info.version,
    ...(info.configFile === undefined ? {} : { config: info.configFile }),
    models: info.models,
    ...(info.cacheDir === undefined ? {} : { cacheDir: info.cacheDir }),
    ...(info.gateway === undefined ? {} : { gateway: info.gateway.url, pool: info.gateway.pool }),
    ...(info.standalone === undefined ? {} : { standalone: info.standalone }),
    ...(info.metrics === undefined ? {} : { metrics: info.metrics }),
    replicas: info.replicas,
  };
}
