import type { ModelConfig } from "../../shared/model-config.ts";
import { parseModelKey } from "../../shared/model-names.ts";
import type { ModelRef } from "../../shared/protocol/replica-state.ts";
import type { ModelRepository, ResolvedModel } from "../models/repository.ts";
import { type BatchingDefaults, type BatchSettings, batchSettingsFor } from "./batch-settings.ts";
import type { ReplicaDevice } from "./device.ts";
import { exclusiveOnGpu, gpuUsedMemory } from "./gpu-memory.ts";
import type { ModelLoader } from "./model-cache.ts";
import type { TensorSpec } from "./ort-tensors.ts";
import { type SessionTuning, sessionOptions } from "./session-options.ts";
import { WorkerSession } from "./worker-session.ts";

/** A model loaded into an onnxruntime session on one replica's device, in a worker thread of its own. */
export interface ModelSession {
  ref: ModelRef;
  session: WorkerSession;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  config: ModelConfig;
  /** How its requests are batched; undefined: one by one. */
  batching: BatchSettings | undefined;
  /** Bytes it takes on its device, and how that was found. */
  bytes: number;
  bytesSource: "measured" | "file";
}

export interface OnnxSessionOptions extends SessionTuning {
  batching: BatchingDefaults;
}

/**
 * Loads models from the repository into onnxruntime sessions on a replica's device. What a model takes:
 * on a GPU, the device memory its session took (used memory before and after creating it, read through
 * nvidia-smi: weights, the provider's arena, cuDNN and cuBLAS handles); on the CPU, or when the GPU cannot
 * be read, the file's size, a close estimate of the weights it places in RAM. Each session lives in a worker
 * thread of its own (worker-session.ts), from load to release, so loads and runs of different models never
 * block each other or the agent's main thread.
 */
export class OnnxModelLoader implements ModelLoader<ModelSession> {
  readonly #repository: ModelRepository;
  readonly #device: ReplicaDevice;
  readonly #options: OnnxSessionOptions;
  readonly #onLoaded: (key: string, milliseconds: number) => void;

  constructor(
    repository: ModelRepository,
    device: ReplicaDevice,
    options: OnnxSessionOptions,
    onLoaded: (key: string, milliseconds: number) => void,
  ) {
    this.#repository = repository;
    this.#device = device;
    this.#options = options;
    this.#onLoaded = onLoaded;
  }

  async estimateBytes(key: string): Promise<number> {
    const ref = parseModelKey(key);
    return (await this.#repository.resolve(ref.name, ref.version)).bytes;
  }

  async load(key: string): Promise<{ session: ModelSession; bytes: number }> {
    const ref = parseModelKey(key);
    const model = await this.#repository.resolve(ref.name, ref.version);
    const started = performance.now();
    const device = this.#device;
    const { session, bytes, bytesSource } =
      device.kind === "cuda"
        ? await exclusiveOnGpu(device.deviceId, () => this.#createMeasured(model, device.deviceId))
        : { session: await this.#create(model), bytes: model.bytes, bytesSource: "file" as const };
    this.#onLoaded(key, performance.now() - started);
    const specs = { inputs: session.inputs, outputs: session.outputs };
    const batching = batchSettingsFor(model.config, specs, this.#options.batching);
    return {
      session: { ref, session, config: model.config, ...specs, batching, bytes, bytesSource },
      bytes,
    };
  }

  async release(loaded: ModelSession): Promise<void> {
    const device = this.#device;
    // Released one at a time with loads, so that a load's measurement does not see memory coming back.
    // Resolves once the session's worker has exited: all its memory is back by then.
    if (device.kind === "cuda") await exclusiveOnGpu(device.deviceId, () => loaded.session.release());
    else await loaded.session.release();
  }

  async #createMeasured(model: ResolvedModel, deviceId: number) {
    const before = await gpuUsedMemory(deviceId);
    const session = await this.#create(model);
    const after = before === undefined ? undefined : await gpuUsedMemory(deviceId);
    const taken = before === undefined || after === undefined ? undefined : after - before;
    // Nothing (or less than nothing) taken means the reading drowned in another process's changes: the
    // file's size is then the better guess.
    return taken !== undefined && taken > 0
      ? { session, bytes: taken, bytesSource: "measured" as const }
      : { session, bytes: model.bytes, bytesSource: "file" as const };
  }

  async #create(model: ResolvedModel): Promise<WorkerSession> {
    try {
      return await WorkerSession.create(model.path, sessionOptions(this.#device, this.#options));
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      // The client sees this message: the model's name, not where the agent keeps its files.
      const where = `${model.name}/${model.version}/model.onnx`;
      throw new Error(`onnxruntime could not load ${where}: ${reason.replaceAll(model.path, where)}`, {
        cause: error,
      });
    }
  }
}
