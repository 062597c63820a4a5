/**
 * The onnxruntime session options a replica creates its sessions with. onnxruntime-node 1.29 hands the CUDA
 * provider its device id and nothing else (js/node/src/session_options_helper.cc), so the provider's own
 * options (arena extend strategy, cuDNN algorithm search, CUDA graphs) stay at onnxruntime's defaults;
 * what the agent can tune are session options and session config entries, which apply to every provider.
 */
import type * as ort from "onnxruntime-node";
import { executionProviders, type ReplicaDevice } from "./device.ts";

export interface SessionTuning {
  /** Threads for one inference on the CPU; by default onnxruntime uses every core. */
  intraOpThreads?: number | undefined;
  /** onnxruntime's memory pattern planner (on by default). */
  memPattern?: boolean | undefined;
  /**
   * Session config entries (onnxruntime_session_options_config_keys.h), such as
   * "session.use_device_allocator_for_initializers": "1". They extend the device's defaults below.
   */
  config?: Readonly<Record<string, string>> | undefined;
  /**
   * How long the session's thread keeps turning after a run instead of sleeping (hot-loop.ts): not an
   * onnxruntime option, the thread's own. The agent gives its GPU replicas --spin-ms (spinWindowMs).
   */
  spinMs?: number | undefined;
}

/**
 * Config entries every session on a CUDA device gets unless told otherwise (--session-config wins).
 * No spinning: a session's CPU threads otherwise spin after each of its runs, and on a CUDA device there is
 * next to nothing for them to do, while the session's own thread launching kernels and the agent's main
 * thread moving request bytes need those cores. On the H200 host, PP-OCRv4 detection over HTTP at 8 clients
 * went from 147 to 193 requests/s, and onnxruntime's run on its thread from 6.3 to 5.4 ms
 * (bench/results/hot-path-cuda.md).
 */
export const CUDA_SESSION_CONFIG: Readonly<Record<string, string>> = {
  "session.intra_op.allow_spinning": "0",
};

export function sessionOptions(
  device: ReplicaDevice,
  tuning: SessionTuning,
): ort.InferenceSession.SessionOptions {
  const config = { ...(device.kind === "cuda" ? CUDA_SESSION_CONFIG : {}), ...tuning.config };
  return {
    executionProviders: executionProviders(device),
    graphOptimizationLevel: "all",
    logSeverityLevel: 3,
    ...(tuning.intraOpThreads === undefined ? {} : { intraOpNumThreads: tuning.intraOpThreads }),
    ...(tuning.memPattern === undefined ? {} : { enableMemPattern: tuning.memPattern }),
    // The Node binding adds each string under `extra` as a session config entry, dotted keys as they are.
    ...(Object.keys(config).length === 0 ? {} : { extra: config }),
  };
}
