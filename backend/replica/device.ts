import * as ort from "onnxruntime-node";
import { SwitchyardError } from "../../shared/errors.ts";

/** Where a replica runs: the CPU, or one GPU through onnxruntime's CUDA execution provider. */
export type ReplicaDevice = { kind: "cpu" } | { kind: "cuda"; deviceId: number };

export type DeviceOption = "cpu" | "cuda" | "auto";

export function deviceLabel(device: ReplicaDevice): string {
  return device.kind === "cpu" ? "cpu" : `cuda:${device.deviceId}`;
}

export function executionProviders(device: ReplicaDevice): ort.InferenceSession.ExecutionProviderConfig[] {
  return device.kind === "cpu" ? ["cpu"] : [{ name: "cuda", deviceId: device.deviceId }];
}

// A minimal ONNX model (one Identity node on a float tensor of shape [1]), 87 bytes, made with onnx-proto.
// Creating a session for it on a device proves the execution provider really works there, before the
// agent accepts any work, instead of failing on the first request.
const PROBE_MODEL = Uint8Array.from(
  atob(
    "CAgSEHN3aXRjaHlhcmQtcHJvYmU6OwoQCgF4EgF5IghJZGVudGl0eRIFcHJvYmVaDwoBeBIKCggIARIECgIIAWIPCgF5EgoKCAgBEgQKAggBQgQKABAR",
  ),
  (char) => char.charCodeAt(0),
);

/** Throws a SwitchyardError that says why the device cannot run models, or resolves when it can. */
export async function probeDevice(device: ReplicaDevice): Promise<void> {
  let session: ort.InferenceSession | undefined;
  try {
    session = await ort.InferenceSession.create(PROBE_MODEL, {
      executionProviders: executionProviders(device),
      logSeverityLevel: 4,
    });
    const input = new ort.Tensor("float32", Float32Array.of(1), [1]);
    await session.run({ x: input });
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    // onnxruntime's CUDA errors carry a C++ signature; the "CUDA failure N: ..." part is what a person needs.
    const reason = /CUDA failure \d+: [^;]+/.exec(message)?.[0].trim() ?? message;
    throw new SwitchyardError(
      "unavailable",
      device.kind === "cuda"
        ? `CUDA device ${device.deviceId} is not usable by onnxruntime (${reason}). Install the onnxruntime CUDA ` +
            "provider next to onnxruntime-node (see README: installing the agent on a GPU host), check " +
            "`nvidia-smi`, or start with --device cpu (or --device auto to fall back to the CPU)."
        : `the CPU execution provider failed: ${reason}`,
      { cause: error },
    );
  } finally {
    await session?.release();
  }
}

/**
 * The devices the agent's replicas run on. `cuda` insists on every listed GPU; `auto` uses the GPUs that
 * work and falls back to the CPU (saying so through `warn`) when none does.
 */
export async function planDevices(options: {
  device: DeviceOption;
  gpus: number[];
  cpuReplicas: number;
  warn: (message: string) => void;
}): Promise<ReplicaDevice[]> {
  const cpu = (): ReplicaDevice[] => Array.from({ length: options.cpuReplicas }, () => ({ kind: "cpu" }));
  if (options.device === "cpu") return cpu();
  const gpus = options.gpus.length > 0 ? options.gpus : [0];
  const usable: ReplicaDevice[] = [];
  for (const deviceId of gpus) {
    const device: ReplicaDevice = { kind: "cuda", deviceId };
    try {
      await probeDevice(device);
      usable.push(device);
    } catch (error) {
      if (options.device === "cuda") throw error;
      options.warn(error instanceof Error ? error.message : String(error));
    }
  }
  if (usable.length > 0) return usable;
  options.warn("no usable GPU: --device auto falls back to the CPU");
  return cpu();
}
