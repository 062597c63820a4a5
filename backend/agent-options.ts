import type { LogFormat } from "./log-settings.ts";
import type { BucketMode } from "./replica/batch-settings.ts";
import type { DeviceOption } from "./replica/device.ts";

/**
 * What the agent runs with, every default already applied. Where it comes from (flags, environment, a
 * config file) is the command line's business (backend/cli/options.ts); the agent only consumes it.
 */
export interface AgentOptions {
  /** The model repository: a directory or an http(s) URL (the gateway's own with --gateway and no --models). */
  models: string;
  /** Where models from a URL are downloaded and verified. */
  cacheDir: string;
  device: DeviceOption;
  gpus: number[];
  /** CPU replicas (with device cpu). */
  replicas: number;
  /** onnxruntime intra-op threads per CPU replica. */
  threads: number;
  maxModels: number;
  /** Bytes of loaded models per replica; undefined on a GPU, where each replica reads it from its card. */
  maxModelMemory?: number | undefined;
  maxConcurrency: number;
  maxBatchSize: number;
  maxQueueDelayMicroseconds: number;
  /** Batches padded to fixed sizes, a session each (--batch-buckets; auto: with CUDA). */
  batchBuckets: BucketMode;
  /** onnxruntime session config entries for every model. */
  sessionConfig: Record<string, string>;
  /** Requests that may wait for a replica; one more is refused. */
  maxQueue: number;
  /** Models to load at start, "name" or "name:version" (parseModelSpec). */
  preload: string[];
  /** 0 keeps an idle model until it is evicted. */
  keepAliveSeconds: number;
  /** The deadline of a request that sets none. */
  timeoutSeconds: number;
  maxBodyBytes: number;
  standalone: boolean;
  host: string;
  port: number;
  /** The standalone server's gRPC port, where it also serves gRPC (--grpc-port). */
  grpcPort?: number;
  /** Clients may register system shared memory regions and name them for tensors (Triton's extension). */
  allowClientShm: boolean;
  /** Threads that serve the standalone server's HTTP (0: the main thread does). */
  httpThreads: number;
  /** With a GPU: how long threads that served a request keep polling before they sleep (hot-loop.ts). */
  spinMs: number;
  name: string;
  /** Prometheus metrics, when served. */
  metrics?: { port: number; host: string };
  logFormat: LogFormat;
  logRequests: boolean;
  /** The config file the settings were read from, for the startup summary. */
  configFile?: string;
  /** The gateway to join, when there is one. */
  gateway?: { url: string; token: string; hints: string[]; pool: string };
}
