/** What every part of the GPU benchmark shares: the device, the model repositories, logging. */
import { mkdtempSync } from "node:fs";
import os from "node:os";
import { join } from "node:path";
import { openRepository } from "../../backend/models/open-repository.ts";
import type { ReplicaDevice } from "../../backend/replica/device.ts";
import { gpuUsedMemory } from "../../backend/replica/gpu-memory.ts";
import { Replica, type ReplicaOptions } from "../../backend/replica/replica.ts";

export interface BenchContext {
  device: ReplicaDevice;
  /** det and the small MLP. */
  repoDir: string;
  /** Generated MLPs for model swaps. */
  swapDir: string;
  /** Shorter runs and smaller models: a dry run of the whole benchmark on a CPU. */
  quick: boolean;
  /** Height and width of det's input. */
  detSize: number;
  /** Flags that put a spawned agent on the same device. */
  agentDeviceArgs: string[];
  log: (line: string) => void;
}

/** Device memory in use (bytes, MiB resolution), or undefined on the CPU. */
export function deviceMemory(context: BenchContext): Promise<number | undefined> {
  return context.device.kind === "cuda" ? gpuUsedMemory(context.device.deviceId) : Promise.resolve(undefined);
}

export function benchReplica(
  context: BenchContext,
  repoDir: string,
  overrides: Partial<ReplicaOptions> = {},
): Replica {
  return new Replica({
    id: "bench",
    device: context.device,
    repository: openRepository(repoDir, {
      cacheDir: mkdtempSync(join(os.tmpdir(), "switchyard-bench-cache-")),
    }),
    maxModels: 4,
    maxModelBytes: 64 * 2 ** 30,
    keepAliveMs: 0,
    maxConcurrency: 64,
    ...overrides,
  });
}

export const GiB = 2 ** 30;
