import * as ort from "onnxruntime-node";
import type { ModelRef } from "../../shared/protocol/replica-state.ts";
import type { ModelConfig } from "../models/model-config.ts";
import type { ModelRepository } from "../models/repository.ts";
import { executionProviders, type ReplicaDevice } from "./device.ts";
import type { ModelLoader } from "./model-cache.ts";
import { sessionSpecs, type TensorSpec } from "./ort-tensors.ts";

/** A model loaded into an onnxruntime session on one replica's device. */
export interface ModelSession {
  ref: ModelRef;
  session: ort.InferenceSession;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  config: ModelConfig;
}

export function parseModelKey(key: string): ModelRef {
  const separator = key.lastIndexOf(":");
  return { name: key.slice(0, separator), version: key.slice(separator + 1) };
}

export interface OnnxSessionOptions {
  /** Threads for one inference on the CPU; by default onnxruntime uses every core. */
  intraOpThreads?: number;
}

/**
 * Loads models from the repository into onnxruntime sessions on a replica's device. The bytes a model
 * takes are its file's size, a close estimate of the weights it places in memory.
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
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(model.path, {
        executionProviders: executionProviders(this.#device),
        graphOptimizationLevel: "all",
        logSeverityLevel: 3,
        ...(this.#options.intraOpThreads === undefined
          ? {}
          : { intraOpNumThreads: this.#options.intraOpThreads }),
      });
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new Error(`onnxruntime could not load ${model.path}: ${reason}`, { cause: error });
    }
    this.#onLoaded(key, performance.now() - started);
    const specs = sessionSpecs(session);
    return { session: { ref, session, config: model.config, ...specs }, bytes: model.bytes };
  }

  async release(loaded: ModelSession): Promise<void> {
    await loaded.session.release();
  }
}
