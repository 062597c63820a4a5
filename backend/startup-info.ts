/**
 * What the agent tells at start, before it loads anything: who it is, where models come from, where it
 * serves, and what each replica may do. People read it as a block (`--log-format text`, drawn by the CLI:
 * backend/cli/startup-summary.ts); log shippers get the same facts as one `agent starting` event
 * (`--log-format json`). It never shows the token.
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
  /** Threads serving the standalone server's HTTP (0: the main thread). */
  httpThreads?: number;
  /** The standalone server offers system shared memory (--allow-client-shm). */
  sharedMemory?: true;
  /** Where the standalone server also serves gRPC (--grpc-port): host:port. */
  grpc?: string;
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

/** The facts as the fields of the `agent starting` log event. */
export function summaryFields(info: StartupInfo): Record<string, unknown> {
  return {
    name: info.name,
    version: info.version,
    ...(info.configFile === undefined ? {} : { config: info.configFile }),
    models: info.models,
    ...(info.cacheDir === undefined ? {} : { cacheDir: info.cacheDir }),
    ...(info.gateway === undefined ? {} : { gateway: info.gateway.url, pool: info.gateway.pool }),
    ...(info.standalone === undefined ? {} : { standalone: info.standalone }),
    ...(info.httpThreads === undefined ? {} : { httpThreads: info.httpThreads }),
    ...(info.sharedMemory === undefined ? {} : { sharedMemory: true }),
    ...(info.grpc === undefined ? {} : { grpc: info.grpc }),
    ...(info.metrics === undefined ? {} : { metrics: info.metrics }),
    replicas: info.replicas,
  };
}
