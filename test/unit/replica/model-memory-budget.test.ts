import os from "node:os";
import { describe, expect, test } from "vitest";
import { nvidiaSmiDevice } from "../../../backend/replica/gpu-memory.ts";
import { modelMemoryBudget } from "../../../backend/replica/model-memory-budget.ts";

const GiB = 2 ** 30;
const h100 = () => 81_559 * 2 ** 20; // what nvidia-smi reports for an H100 80GB, in MiB

describe("modelMemoryBudget", () => {
  test("on a GPU, 80% of its memory, split between the replicas on it", () => {
    const gpu = { kind: "cuda", deviceId: 0 } as const;
    expect(modelMemoryBudget(gpu, { totalGpuMemory: h100 })).toEqual({
      bytes: Math.floor(h100() * 0.8),
      source: "gpu-memory",
    });
    expect(modelMemoryBudget(gpu, { totalGpuMemory: h100, replicasOnDevice: 2 }).bytes).toBe(
      Math.floor((h100() * 0.8) / 2),
    );
  });

  test("the flag wins; a GPU whose memory cannot be read gets 8 GiB; the CPU half the RAM", () => {
    const gpu = { kind: "cuda", deviceId: 3 } as const;
    expect(modelMemoryBudget(gpu, { configured: 5 * GiB, totalGpuMemory: h100 })).toEqual({
      bytes: 5 * GiB,
      source: "flag",
    });
    expect(modelMemoryBudget(gpu, { totalGpuMemory: () => undefined })).toEqual({
      bytes: 8 * GiB,
      source: "fallback",
    });
    expect(modelMemoryBudget({ kind: "cpu" })).toEqual({
      bytes: Math.floor(os.totalmem() / 2),
      source: "ram",
    });
  });
});

describe("nvidiaSmiDevice", () => {
  test("CUDA device ids count the devices CUDA_VISIBLE_DEVICES leaves visible; nvidia-smi counts them all", () => {
    expect(nvidiaSmiDevice(1, {})).toBe("1");
    expect(nvidiaSmiDevice(1, { CUDA_VISIBLE_DEVICES: "2,3" })).toBe("3");
    expect(nvidiaSmiDevice(0, { CUDA_VISIBLE_DEVICES: "GPU-8f1e, GPU-77aa" })).toBe("GPU-8f1e");
  });
});
