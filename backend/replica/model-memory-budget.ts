/**
 * How many bytes of loaded models a replica may hold when `--max-model-memory` is not given: on a GPU, a
 * share of the card's memory (the rest is the CUDA context, cuDNN and cuBLAS workspaces and the
 * activations of running batches), split between the replicas on that card; on the CPU, half the RAM.
 */
import os from "node:os";
import type { ReplicaDevice } from "./device.ts";
import { gpuTotalMemory } from "./gpu-memory.ts";

/** The share of a GPU's memory that models may take. */
export const GPU_MODEL_MEMORY_SHARE = 0.8;
/** The budget of a GPU whose memory cannot be read (no nvidia-smi). */
export const GPU_FALLBACK_BUDGET_BYTES = 8 * 2 ** 30;

export interface ModelMemoryBudget {
  bytes: number;
  /** Where the number comes from, for the startup log. */
  source: "flag" | "gpu-memory" | "fallback" | "ram";
}

export function modelMemoryBudget(
  device: ReplicaDevice,
  options: {
    /** `--max-model-memory`, when given. */
    configured?: number | undefined;
    /** Replicas sharing this device (they split its memory). */
    replicasOnDevice?: number | undefined;
    totalGpuMemory?: (deviceId: number) => number | undefined;
  } = {},
): ModelMemoryBudget {
  if (options.configured !== undefined) return { bytes: options.configured, source: "flag" };
  const sharing = Math.max(1, options.replicasOnDevice ?? 1);
  if (device.kind === "cpu") return { bytes: Math.floor(os.totalmem() / 2 / sharing), source: "ram" };
  const total = (options.totalGpuMemory ?? gpuTotalMemory)(device.deviceId);
  if (total === undefined) return { bytes: GPU_FALLBACK_BUDGET_BYTES, source: "fallback" };
  return { bytes: Math.floor((total * GPU_MODEL_MEMORY_SHARE) / sharing), source: "gpu-memory" };
}
