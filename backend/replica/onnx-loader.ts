import { declaredBatching, type ModelConfig } from "../../shared/model-config.ts";
import { parseModelKey } from "../../shared/model-names.ts";
import type { OutputClasses, OutputLabels } from "../../shared/oip/classification.ts";
import { batchesAlongFirstDim } from "../../shared/protocol/model-signatures.ts";
import type { ModelRef } from "../../shared/protocol/replica-state.ts";
import type { ModelRepository, ResolvedModel } from "../models/repository.ts";
import { type BatchingDefaults, type BatchSettings, batchSettingsFor } from "./batch-settings.ts";
import type { ReplicaDevice } from "./device.ts";
import { exclusiveOnGpu, gpuUsedMemory } from "./gpu-memory.ts";
import type { ModelLoader } from "./model-cache.ts";
import { bucketWarmupFeeds, declaredWarmup, readWarmupFiles } from "./model-warmup.ts";
import type { TensorSpec } from "./ort-tensors.ts";
import { checkLabelledOutputs, readOutputLabels } from "./output-labels.ts";
import { type SessionTuning, sessionOptions } from "./session-options.ts";
import { WorkerSession } from "./worker-session.ts";

/** A model loaded into an onnxruntime session on one replica's device, in a worker thread of its own. */
export interface ModelSession {
  ref: ModelRef;
  session: WorkerSession;
  /** With batch buckets: the session of each bucket size (size 1 is `session`), each warmed at load. */
  buckets?: ReadonlyMap<number, WorkerSession> | undefined;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  config: ModelConfig;
  /** How its outputs are classified: per row where config.json declares batching, with its label files. */
  classes: OutputClasses;
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

  async load(key: string): Promise<{ session: ModelSession; bytes: number; keepAliveMs?: number }> {
    const ref = parseModelKey(key);
    const model = await this.#repository.resolve(ref.name, ref.version);
    const started = performance.now();
    const device = this.#device;
    const { value, bytes, bytesSource } =
      device.kind === "cuda"
        ? await exclusiveOnGpu(device.deviceId, () => this.#measured(model, device.deviceId))
        : await this.#sessions(model).then((value) => ({
            value,
            // Each batch bucket's session holds its own copy of the weights.
            bytes: model.bytes * (value.buckets?.size ?? 1),
            bytesSource: "file" as const,
          }));
    this.#onLoaded(key, performance.now() - started);
    const { keep_alive_s: keepAliveSeconds } = model.config;
    const { labels, ...sessions } = value;
    const classes = { batched: batchesAlongFirstDim(declaredBatching(model.config)), labels };
    return {
      session: { ref, config: model.config, classes, ...sessions, bytes, bytesSource },
      bytes,
      // The model's own keep-alive (config.json) wins over the agent's --keep-alive.
      ...(keepAliveSeconds === undefined ? {} : { keepAliveMs: keepAliveSeconds * 1000 }),
    };
  }

  async release(loaded: ModelSession): Promise<void> {
    const device = this.#device;
    const release = () => Promise.all(sessionsOf(loaded).map((session) => session.release()));
    // Released one at a time with loads, so that a load's measurement does not see memory coming back.
    // Resolves once the sessions' workers have exited: all their memory is back by then.
    if (device.kind === "cuda") await exclusiveOnGpu(device.deviceId, release);
    else await release();
  }

  /** The model's sessions, measured on the GPU: every bucket's session and its warm-up count. */
  async #measured(model: ResolvedModel, deviceId: number) {
    const before = await gpuUsedMemory(deviceId);
    const value = await this.#sessions(model);
    const after = before === undefined ? undefined : await gpuUsedMemory(deviceId);
    const taken = before === undefined || after === undefined ? undefined : after - before;
    // Nothing (or less than nothing) taken means the reading drowned in another process's changes: the
    // file's size (times the sessions) is then the better guess.
    return taken !== undefined && taken > 0
      ? { value, bytes: taken, bytesSource: "measured" as const }
      : { value, bytes: model.bytes * (value.buckets?.size ?? 1), bytesSource: "file" as const };
  }

  /**
   * The model's session and its batch settings, warmed up: with batch buckets, a session per bucket, each
   * warmed at its size; without, the one session runs config.json's model_warmup samples.
   */
  async #sessions(
    model: ResolvedModel,
  ): Promise<
    Omit<ModelSession, "ref" | "config" | "classes" | "bytes" | "bytesSource"> & { labels: OutputLabels }
  > {
    // Before the session: a missing file fails the load without waiting for onnxruntime first.
    const files = await readWarmupFiles(model.config, model).catch((error: unknown) => {
      throw warmupFailed(model, error);
    });
    const labels = await readOutputLabels(model.config, model).catch((error: unknown) => {
      throw labelsFailed(model, error);
    });
    const session = await this.#create(model);
    const specs = { inputs: session.inputs, outputs: session.outputs };
    try {
      checkLabelledOutputs(labels, specs.outputs);
    } catch (error) {
      await session.release().catch(() => undefined);
      throw labelsFailed(model, error);
    }
    const names = specs.outputs.map((output) => output.name);
    const batching = batchSettingsFor(model.config, specs, this.#options.batching, {
      device: this.#device.kind,
      opTypes: session.opTypes,
    });
    const buckets = new Map<number, WorkerSession>();
    try {
      if (batching?.buckets === undefined) {
        for (const run of declaredWarmup(specs.inputs, model.config, files)) {
          for (let done = 0; done < run.count; done += 1) {
            await session.run(run.feeds(), names, { handOver: true }).catch((error: unknown) => {
              const reason = error instanceof Error ? error.message : String(error);
              throw new Error(`model_warmup sample '${run.sample}': ${reason}`, { cause: error });
            });
          }
        }
        return { session, ...specs, batching, labels };
      }
      for (const size of batching.buckets) {
        const bucket = size === 1 ? session : await this.#create(model);
        buckets.set(size, bucket);
        const feeds = bucketWarmupFeeds(specs.inputs, model.config, size, files);
        if (feeds !== undefined) await bucket.run(feeds, names, { handOver: true });
      }
    } catch (error) {
      await Promise.all([session, ...buckets.values()].map((each) => each.release().catch(() => undefined)));
      throw warmupFailed(model, error);
    }
    return { session, ...specs, batching, buckets, labels };
  }

  async #create(model: ResolvedModel): Promise<WorkerSession> {
    try {
      return await WorkerSession.create(model.path, sessionOptions(this.#device, this.#options), {
        spinMs: this.#options.spinMs,
      });
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

/** A step of the load that failed, as the load's error: what failed, then why (naming the sample or output). */
function stepFailed(what: string, error: unknown): Error {
  const reason = error instanceof Error ? error.message : String(error);
  return new Error(`${what} failed: ${reason}`, { cause: error });
}

const warmupFailed = (model: ResolvedModel, error: unknown) =>
  stepFailed(`warming ${model.name}/${model.version} up`, error);
const labelsFailed = (model: ResolvedModel, error: unknown) =>
  stepFailed(`reading ${model.name}/${model.version}'s labels`, error);

/** Every session a loaded model holds, each once. */
function sessionsOf(loaded: ModelSession): WorkerSession[] {
  return [...new Set([loaded.session, ...(loaded.buckets?.values() ?? [])])];
}
