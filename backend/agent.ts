import type { Hono } from "hono";
import packageJson from "../package.json" with { type: "json" };
import { modelKey, parseModelSpec } from "../shared/model-names.ts";
import { routingPolicy } from "../shared/routing/policies.ts";
import type { AgentOptions } from "./agent-options.ts";
import { type GatewayLink, startGatewayLink } from "./gateway-link/gateway-link.ts";
import { isOnGateway } from "./gateway-link/gateway-urls.ts";
import type { Log } from "./log.ts";
import type { LogSettings } from "./log-settings.ts";
import { AgentMetrics } from "./metrics/agent-metrics.ts";
import { MeteredReplica } from "./metrics/metered-replica.ts";
import { type MetricsServer, startMetricsServer } from "./metrics/metrics-server.ts";
import { ModelDescriber } from "./models/model-describer.ts";
import { ModelService } from "./models/model-service.ts";
import { openRepository } from "./models/open-repository.ts";
import type { DownloadProgress } from "./models/repository.ts";
import { ReplicaPool } from "./pool/replica-pool.ts";
import { deviceLabel, planDevices } from "./replica/device.ts";
import { gpuTotalMemory, gpuUsedMemory } from "./replica/gpu-memory.ts";
import { spinWindowMs } from "./replica/hot-loop.ts";
import type { GrpcControl } from "./server/grpc/grpc-control.ts";
import { startIntakeThreads } from "./server/intake-threads.ts";
import { SharedMemoryRegions } from "./server/shared-memory-regions.ts";
import { createStandaloneApp } from "./server/standalone-app.ts";
import { appListener, listen, standaloneServer } from "./server/standalone-server.ts";
import { type StartupInfo, summaryFields } from "./startup-info.ts";
import { withinGrace } from "./within-grace.ts";

export interface RunningAgent {
  /** The standalone server's address, when it serves one. */
  url?: string;
  /** The gRPC server's host:port, when it serves one (--grpc-port). */
  grpcAddress?: string;
  /** Stops taking work, lets what is in flight finish (up to graceMs), releases every session. */
  stop(graceMs: number): Promise<void>;
}

/** How the agent talks to the person who started it (the CLI's terminal); all optional. */
export interface AgentUi {
  /** Shows the startup summary to people; without it, or with --log-format json, its facts go to the log. */
  announce?: (info: StartupInfo) => void;
  /** Model download progress (a progress bar on a terminal). */
  onProgress?: (progress: DownloadProgress) => void;
}

/** The agent's log, and its settings (which the standalone server's logging endpoints change). */
export interface AgentLogging {
  log: Log;
  settings: LogSettings;
}

/** Builds the replicas from the options, preloads, and serves (standalone, a gateway, or both). */
export async function startAgent(
  options: AgentOptions,
  logging: AgentLogging,
  ui: AgentUi = {},
): Promise<RunningAgent> {
  const { log, settings: logSettings } = logging;
  const gateway = options.gateway;
  // The agent token goes with downloads from the gateway's own repository, never to another host.
  const repository = openRepository(options.models, {
    cacheDir: options.cacheDir,
    ...(ui.onProgress === undefined ? {} : { onProgress: ui.onProgress }),
    ...(gateway !== undefined && isOnGateway(gateway.url, options.models)
      ? { headers: { Authorization: `Bearer ${gateway.token}` } }
      : {}),
  });
  const devices = await planDevices({
    device: options.device,
    gpus: options.gpus,
    cpuReplicas: options.replicas,
    warn: (message) => log("warning", { message }),
  });
  const replicaStates = () => replicas.map((replica) => replica.state());
  const metrics = new AgentMetrics({
    name: options.name,
    version: packageJson.version,
    states: replicaStates,
    gpuMemory: async (deviceId) => ({ used: await gpuUsedMemory(deviceId), total: gpuTotal(deviceId) }),
    settle: async () => {
      await pool.lanesReported();
      // Runs are counted from the replicas' state changes, which their listeners hear at the turn's end.
      await new Promise((resolve) => setImmediate(resolve));
    },
  });
  const metering = {
    metrics,
    log,
    // Read at each request: the logging endpoints turn request lines on and off while the agent runs.
    get logRequests() {
      return logSettings.requestLines;
    },
  };
  const replicas: MeteredReplica[] = devices.map(
    (device, index) =>
      new MeteredReplica(
        {
          id: String(index),
          device,
          repository,
          maxModels: options.maxModels,
          maxModelBytes: options.maxModelMemory,
          replicasOnDevice: devices.filter((other) => deviceLabel(other) === deviceLabel(device)).length,
          keepAliveMs: options.keepAliveSeconds * 1000,
          maxConcurrency: options.maxConcurrency,
          ...(device.kind === "cpu" ? { intraOpThreads: options.threads } : {}),
          batching: {
            maxBatchSize: options.maxBatchSize,
            maxQueueDelayMicroseconds: options.maxQueueDelayMicroseconds,
            buckets: options.batchBuckets,
          },
          session: { config: options.sessionConfig, spinMs: spinWindowMs(options.spinMs, [device]) },
        },
        metering,
      ),
  );
  const pool = new ReplicaPool(replicas, { policy: routingPolicy(undefined), maxQueue: options.maxQueue });
  const models = new ModelService({ pool, repository, describer: new ModelDescriber(repository), log });
  announce(startupInfo(options, repository.source, replicas), options.logFormat, log, ui);
  const metricsServer: MetricsServer | undefined =
    options.metrics === undefined
      ? undefined
      : await startMetricsServer(metrics, options.metrics.host, options.metrics.port).catch(
          (error: unknown) => {
            throw new Error(
              `--metrics-port ${options.metrics?.port}: cannot listen on ${options.metrics?.host} (${(error as Error).message}); pick a free port`,
            );
          },
        );
  if (metricsServer !== undefined) log("metrics listening", { url: metricsServer.url });

  let ready = false;
  const regions = options.allowClientShm
    ? new SharedMemoryRegions({ maxInputBytes: options.maxBodyBytes })
    : undefined;
  // What the standalone server answers from, over HTTP and over gRPC alike.
  const serving = {
    pool,
    models,
    name: options.name,
    version: packageJson.version,
    maxBodyBytes: options.maxBodyBytes,
    defaultTimeoutMs: options.timeoutSeconds * 1000,
    isReady: () => ready,
    ...(regions === undefined ? {} : { sharedMemory: regions }),
    log,
    logSettings,
  };
  const app = createStandaloneApp(serving);

  // Where gRPC listens, and its calls other than inference, answered on this thread wherever gRPC is read.
  // Its library is loaded only where gRPC is served.
  const grpcServing =
    options.grpcPort === undefined
      ? undefined
      : {
          port: options.grpcPort,
          control: (await import("./server/grpc/grpc-control.ts")).grpcControl(serving),
        };
  const server = options.standalone
    ? await serveStandalone(options, app, pool, regions, log, grpcServing)
    : undefined;
  const url = server === undefined ? undefined : `http://${options.host}:${server.port}`;
  if (url !== undefined) log("standalone server listening", { url });
  // On this thread where no HTTP intake thread reads it (--http-threads 0).
  const grpc =
    grpcServing === undefined || server?.grpcPort !== undefined
      ? undefined
      : await (await import("./server/grpc/grpc-service.ts")).startGrpcService({
          host: options.host,
          port: grpcServing.port,
          maxBodyBytes: options.maxBodyBytes,
          defaultTimeoutMs: serving.defaultTimeoutMs,
          infer: (call) => pool.infer(call),
          answerer: { agentName: options.name, ...(regions === undefined ? {} : { sharedMemory: regions }) },
          control: grpcServing.control,
          log,
        });
  const grpcPort = server?.grpcPort ?? grpc?.port;
  const grpcAddress = grpcPort === undefined ? undefined : `${options.host}:${grpcPort}`;
  if (grpcAddress !== undefined) log("grpc server listening", { address: grpcAddress });

  // Preload in order; a model that fails to load is reported and skipped, the others still load.
  for (const spec of options.preload) {
    const { name, version } = parseModelSpec(spec);
    try {
      const signature = await models.load(name, version, { pin: false });
      log("preloaded", { model: modelKey(signature) });
    } catch (error) {
      log("preload failed", { model: spec, error: (error as Error).message });
    }
  }
  // Metadata of a local repository's models is read from their graphs now, so no request has to load one.
  await models.describeRepository();
  ready = true;
  log("agent ready", {});
  // Joined only now, so the hello already lists the preloaded models.
  const link: GatewayLink | undefined =
    gateway === undefined
      ? undefined
      : startGatewayLink({
          gateway: gateway.url,
          token: gateway.token,
          pool: gateway.pool,
          hints: gateway.hints,
          agent: { name: options.name, version: packageJson.version },
          replicas,
          models,
          modelsFromGateway: isOnGateway(gateway.url, options.models),
          log,
        });

  return {
    ...(url === undefined ? {} : { url }),
    ...(grpcAddress === undefined ? {} : { grpcAddress }),
    async stop(graceMs) {
      // The gateway link drains by itself within the grace (drain frame, in-flight work, close 1001).
      await Promise.all([server?.close(graceMs), grpc?.close(graceMs), link?.stop(graceMs)]);
      await pool.close();
      await metricsServer?.close();
    },
  };
}

/**
 * The standalone server: on the main thread, or on --http-threads intake threads that leave it only the
 * routing, and then serve gRPC too where it is asked for (`grpc`: the port, and the calls answered here).
 * `close` stops accepting and waits up to the grace for what is in flight.
 */
async function serveStandalone(
  options: AgentOptions,
  app: Hono,
  pool: ReplicaPool,
  regions: SharedMemoryRegions | undefined,
  log: Log,
  grpc: { port: number; control: GrpcControl } | undefined,
): Promise<{ port: number; grpcPort?: number; close(graceMs: number): Promise<void> }> {
  const limits = {
    agentName: options.name,
    maxBodyBytes: options.maxBodyBytes,
    defaultTimeoutMs: options.timeoutSeconds * 1000,
    spinMs: spinWindowMs(
      options.spinMs,
      pool.replicas.map((replica) => replica.device),
    ),
  };
  if (options.httpThreads > 0) {
    return startIntakeThreads({
      ...limits,
      count: options.httpThreads,
      ...(regions === undefined ? {} : { regions }),
      ...(grpc === undefined ? {} : { grpc }),
      host: options.host,
      port: options.port,
      pool,
      app,
      log,
    });
  }
  const server = await listen(
    standaloneServer(appListener(app), {
      ...limits,
      infer: (call) => pool.infer(call),
      ...(regions === undefined ? {} : { sharedMemory: regions }),
      log,
    }),
    options.host,
    options.port,
  );
  const address = server.address();
  return {
    port: typeof address === "object" && address !== null ? address.port : options.port,
    async close(graceMs) {
      await withinGrace(new Promise<void>((resolve) => server.close(() => resolve())), graceMs);
    },
  };
}

/** Each GPU's total memory, read once (it does not change). */
const gpuTotals = new Map<number, number | undefined>();
function gpuTotal(deviceId: number): number | undefined {
  if (!gpuTotals.has(deviceId)) gpuTotals.set(deviceId, gpuTotalMemory(deviceId));
  return gpuTotals.get(deviceId);
}

function startupInfo(
  options: AgentOptions,
  models: string,
  replicas: readonly MeteredReplica[],
): StartupInfo {
  return {
    name: options.name,
    version: packageJson.version,
    ...(options.configFile === undefined ? {} : { configFile: options.configFile }),
    models,
    ...(/^https?:/i.test(models) ? { cacheDir: options.cacheDir } : {}),
    ...(options.gateway === undefined
      ? {}
      : { gateway: { url: options.gateway.url, pool: options.gateway.pool } }),
    ...(options.standalone
      ? {
          standalone: `http://${options.host}:${options.port === 0 ? "<any free port>" : options.port}`,
          httpThreads: options.httpThreads,
          ...(options.allowClientShm ? { sharedMemory: true as const } : {}),
          ...(options.grpcPort === undefined
            ? {}
            : { grpc: `${options.host}:${options.grpcPort === 0 ? "<any free port>" : options.grpcPort}` }),
        }
      : {}),
    ...(options.metrics === undefined
      ? {}
      : {
          metrics: `http://${options.metrics.host}:${options.metrics.port === 0 ? "<any free port>" : options.metrics.port}/metrics`,
        }),
    replicas: replicas.map((replica) => ({
      id: replica.id,
      device: deviceLabel(replica.device),
      memoryBytes: replica.memoryBudget.bytes,
      memorySource: replica.memoryBudget.source,
      maxModels: options.maxModels,
      maxConcurrency: options.maxConcurrency,
      maxBatchSize: options.maxBatchSize,
      ...(replica.device.kind === "cpu" ? { threads: options.threads } : {}),
    })),
  };
}

function announce(info: StartupInfo, format: AgentOptions["logFormat"], log: Log, ui: AgentUi): void {
  if (format === "text" && ui.announce !== undefined) ui.announce(info);
  else log("agent starting", summaryFields(info));
}
