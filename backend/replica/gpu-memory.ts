/**
 * GPU memory as the driver sees it, read through `nvidia-smi` (the agent has no NVML binding, and
 * onnxruntime-node exposes no memory information). Used to size a GPU replica's model budget and to measure
 * what a model really takes once loaded. Every query can fail (no driver tools, a container without them):
 * callers get undefined and fall back.
 */
import { execFile, execFileSync } from "node:child_process";

const MiB = 2 ** 20;
const QUERY_TIMEOUT_MS = 5000;

/**
 * nvidia-smi numbers GPUs in PCI order; CUDA (and so onnxruntime's device id) numbers the devices left
 * visible by CUDA_VISIBLE_DEVICES. Device id N is the N-th entry of that list when it is set (an index or a
 * UUID, both of which nvidia-smi's -i takes).
 */
export function nvidiaSmiDevice(deviceId: number, env: NodeJS.ProcessEnv = process.env): string {
  const visible = env.CUDA_VISIBLE_DEVICES?.split(",")
    .map((entry) => entry.trim())
    .filter(Boolean);
  return visible?.[deviceId] ?? String(deviceId);
}

function queryArgs(field: string, deviceId: number): string[] {
  return [`--query-gpu=${field}`, "--format=csv,noheader,nounits", "-i", nvidiaSmiDevice(deviceId)];
}

function parseMiB(output: string): number | undefined {
  const value = Number(output.trim().split("\n")[0]);
  return Number.isFinite(value) && value >= 0 ? value * MiB : undefined;
}

/** The GPU's total memory in bytes, read once at start (synchronously: replicas are built then). */
export function gpuTotalMemory(deviceId: number): number | undefined {
  try {
    const output = execFileSync("nvidia-smi", queryArgs("memory.total", deviceId), {
      encoding: "utf8",
      timeout: QUERY_TIMEOUT_MS,
      stdio: ["ignore", "pipe", "ignore"],
    });
    return parseMiB(output);
  } catch {
    return undefined;
  }
}

/** Memory in use on the GPU now, by every process (MiB resolution). */
export function gpuUsedMemory(deviceId: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    execFile(
      "nvidia-smi",
      queryArgs("memory.used", deviceId),
      { encoding: "utf8", timeout: QUERY_TIMEOUT_MS },
      (error, stdout) => resolve(error ? undefined : parseMiB(stdout)),
    );
  });
}

const deviceQueues = new Map<number, Promise<unknown>>();

/**
 * Runs `work` alone among this process's loads and releases on the GPU, so that the memory measured before
 * and after a load is that load's (concurrent loads of two models would each count the other's).
 */
export function exclusiveOnGpu<T>(deviceId: number, work: () => Promise<T>): Promise<T> {
  const previous = deviceQueues.get(deviceId) ?? Promise.resolve();
  const result = previous.then(work, work);
  const settled = result.then(
    () => undefined,
    () => undefined,
  );
  deviceQueues.set(deviceId, settled);
  void settled.then(() => {
    if (deviceQueues.get(deviceId) === settled) deviceQueues.delete(deviceId);
  });
  return result;
}
