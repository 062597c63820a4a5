import { execFileSync } from "node:child_process";
import { cpus, totalmem } from "node:os";

/**
 * The machine a GPU-host benchmark ran on, for its report: cores, CPU model, memory, and the GPU's name when
 * it ran on one (`gpu`: its device id).
 */
export function machineLabel(gpu?: number): string {
  const host = `${cpus().length} x ${cpus()[0]?.model.trim() ?? "cpu"}, ${Math.round(totalmem() / 2 ** 30)} GiB`;
  return gpu === undefined ? host : `${host}, ${gpuName(gpu)}`;
}

function gpuName(deviceId: number): string {
  try {
    return execFileSync("nvidia-smi", ["--query-gpu=name", "--format=csv,noheader", "-i", String(deviceId)], {
      encoding: "utf8",
    }).trim();
  } catch {
    return "GPU (nvidia-smi failed)";
  }
}
