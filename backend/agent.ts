import { serve } from "@hono/node-server";
import packageJson from "../package.json" with { type: "json" };
import { routingPolicy } from "../shared/routing/policies.ts";
import type { AgentOptions } from "./cli/options.ts";
import { formatSize } from "./cli/size.ts";
import type { Log } from "./log.ts";
import { openRepository } from "./models/repository.ts";
import { ReplicaPool } from "./pool/replica-pool.ts";
import { deviceLabel, planDevices } from "./replica/device.ts";
import { Replica } from "./replica/replica.ts";
import { createStandaloneApp } from "./server/standalone-app.ts";

export interface RunningAgent {
  /** The standalone server's address, when it serves one. */
  url?: string;
  /** Stops taking work, lets what is in flight finish (up to graceMs), releases every session. */
  stop(graceMs: number): Promise<void>;
}

/** Builds the replicas from the options, preloads, and serves (standalone). */
export async function startAgent(options: AgentOptions, log: Log): Promise<RunningAgent> {
  const repository = openRepository(options.models, { cacheDir: options.cacheDir });
  const devices = await planDevices({
    device: options.device,
    gpus: options.gpus,
    cpuReplicas: options.replicas,
    warn: (message) => log("warning", { message }),
  });
  const replicas = devices.map(
    (device, index) =>
      new Replica({
        id: String(index),
        device,
        repository,
        maxModels: options.maxModels,
        maxModelBytes: options.maxModelMemory,
        keepAliveMs: options.keepAliveSeconds * 1000,
        maxConcurrency: options.maxConcurrency,
        ...(device.kind === "cpu" ? { intraOpThreads: options.threads } : {}),
      }),
  );
  const pool = new ReplicaPool(replicas, { policy: routingPolicy(undefined), maxQueue: options.maxQueue });
  log("agent starting", {
    name: options.name,
    models: repository.source,
    replicas: replicas.map((replica) => deviceLabel(replica.device)).join(","),
    maxModels: options.maxModels,
    memoryPerReplica: formatSize(options.maxModelMemory),
    maxConcurrency: options.maxConcurrency,
  });

  let ready = false;
  const app = createStandaloneApp({
    pool,
    repository,
    name: options.name,
    version: packageJson.version,
    maxBodyBytes: options.maxBodyBytes,
    defaultTimeoutMs: options.timeoutSeconds * 1000,
    isReady: () => ready,
    log,
  });

  const server = options.standalone
    ? await new Promise<ReturnType<typeof serve>>((resolve) => {
        const started = serve({ fetch: app.fetch, hostname: options.host, port: options.port }, () =>
          resolve(started),
        );
      })
    : undefined;
  const address = server?.address();
  const url = address && typeof address === "object" ? `http://${options.host}:${address.port}` : undefined;
  if (url !== undefined) log("standalone server listening", { url });

  // Preload in order; a model that fails to load is reported and skipped, the others still load.
  for (const spec of options.preload) {
    const [name = spec, version] = spec.split(":");
    try {
      const signature = await pool.load(name, version);
      log("preloaded", { model: `${signature.ref.name}:${signature.ref.version}` });
    } catch (error) {
      log("preload failed", { model: spec, error: (error as Error).message });
    }
  }
  ready = true;
  log("agent ready", {});

  return {
    ...(url === undefined ? {} : { url }),
    async stop(graceMs) {
      const closed = new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
      const grace = new Promise<void>((resolve) => setTimeout(resolve, graceMs).unref());
      await Promise.race([closed, grace]);
      await pool.close();
    },
  };
}
