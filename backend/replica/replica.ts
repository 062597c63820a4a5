import type * as ort from "onnxruntime-node";
import { SwitchyardError } from "../../shared/errors.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { type ModelRef, modelKey, type ReplicaState } from "../../shared/protocol/replica-state.ts";
import type { ModelRepository } from "../models/repository.ts";
import { deviceLabel, type ReplicaDevice } from "./device.ts";
import { ModelCache } from "./model-cache.ts";
import { ModelTimingsTable } from "./model-timings.ts";
import { type ModelSession, OnnxModelLoader, parseModelKey } from "./onnx-loader.ts";
import { checkInputs, fromOrtTensor, type TensorSpec, toOrtTensor } from "./ort-tensors.ts";
import { Slots } from "./slots.ts";

export interface ReplicaOptions {
  id: string;
  device: ReplicaDevice;
  repository: ModelRepository;
  maxModels: number;
  maxModelBytes: number;
  /** Unload a model idle this long; 0 keeps models until evicted. */
  keepAliveMs: number;
  maxConcurrency: number;
  intraOpThreads?: number;
}

export interface InferCall {
  model: string;
  /** Omitted: the repository's highest version. */
  version?: string;
  inputs: Tensor[];
  /** Output names to return; omitted: all of them. */
  outputs?: string[];
  signal?: AbortSignal;
}

export interface InferTimings {
  /** Waiting for a concurrency slot on this replica. */
  queueMs: number;
  /** Waiting for the model to load (0 on a hit). */
  loadMs: number;
  inferMs: number;
}

export interface InferOutcome {
  model: ModelRef;
  outputs: Tensor[];
  cache: "hit" | "miss";
  timings: InferTimings;
}

export interface ModelSignature {
  ref: ModelRef;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

// Failed loads are remembered this long so that the state sent to the router shows them.
const FAILED_LOAD_MEMORY_MS = 60_000;

/**
 * One execution context (one GPU, or the CPU) with its own LRU cache of onnxruntime sessions and its own
 * concurrency slots. It reports its state at every change through `onChange`.
 */
export class Replica {
  readonly id: string;
  readonly device: ReplicaDevice;
  readonly #repository: ModelRepository;
  readonly #cache: ModelCache<ModelSession>;
  readonly #slots: Slots;
  readonly #timings = new ModelTimingsTable();
  readonly #failed = new Map<string, { ref: ModelRef; reason: string; at: number }>();
  readonly #listeners = new Set<(state: ReplicaState) => void>();
  readonly #limits: { maxModels: number; maxModelBytes: number };

  constructor(options: ReplicaOptions) {
    this.id = options.id;
    this.device = options.device;
    this.#repository = options.repository;
    this.#limits = { maxModels: options.maxModels, maxModelBytes: options.maxModelBytes };
    const loader = new OnnxModelLoader(
      options.repository,
      options.device,
      options.intraOpThreads === undefined ? {} : { intraOpThreads: options.intraOpThreads },
      (key, milliseconds) => this.#timings.recordLoad(key, milliseconds),
    );
    this.#cache = new ModelCache({
      limits: { maxModels: options.maxModels, maxBytes: options.maxModelBytes },
      keepAliveMs: options.keepAliveMs,
      loader,
      now: () => performance.now(),
    });
    this.#slots = new Slots(options.maxConcurrency, () => this.#changed());
    this.#cache.onChange(() => this.#changed());
  }

  /** Resolves the model's version: the one asked for, or the repository's highest. */
  async resolve(name: string, version?: string): Promise<ModelRef> {
    const model = await this.#repository.resolve(name, version);
    return { name: model.name, version: model.version };
  }

  async infer(call: InferCall): Promise<InferOutcome> {
    const ref = await this.resolve(call.model, call.version);
    const key = modelKey(ref);
    const queuedAt = performance.now();
    const releaseSlot = await this.#slots.acquire(call.signal);
    const queueMs = performance.now() - queuedAt;
    try {
      const lease = await this.#acquire(key, ref);
      try {
        const { session, inputs: inputSpecs, outputs: outputSpecs } = lease.session;
        checkInputs(ref.name, call.inputs, inputSpecs);
        const wanted = call.outputs ?? outputSpecs.map((spec) => spec.name);
        for (const name of wanted) {
          if (!outputSpecs.some((spec) => spec.name === name)) {
            const known = outputSpecs.map((spec) => spec.name).join(", ");
            throw new SwitchyardError(
              "bad_input",
              `model '${ref.name}' has no output '${name}' (its outputs: ${known})`,
            );
          }
        }
        const feeds: Record<string, ort.Tensor> = {};
        for (const input of call.inputs) feeds[input.name] = toOrtTensor(input);
        const started = performance.now();
        const results = await this.#run(session, feeds, wanted, ref);
        const inferMs = performance.now() - started;
        this.#timings.recordRun(key, inferMs);
        return {
          model: ref,
          outputs: wanted.map((name) => fromOrtTensor(name, results[name] as ort.Tensor)),
          cache: lease.hit ? "hit" : "miss",
          timings: { queueMs, loadMs: lease.hit ? 0 : lease.waitedMs, inferMs },
        };
      } finally {
        lease.release();
      }
    } finally {
      releaseSlot();
    }
  }

  async #run(
    session: ort.InferenceSession,
    feeds: Record<string, ort.Tensor>,
    outputs: string[],
    ref: ModelRef,
  ): Promise<ort.InferenceSession.ReturnType> {
    try {
      return await session.run(feeds, outputs);
    } catch (error) {
      // onnxruntime rejects what the graph cannot compute (say, mismatched inner dimensions): that is the
      // request's fault, and the replica stays healthy.
      const reason = error instanceof Error ? error.message : String(error);
      throw new SwitchyardError("bad_input", `model '${ref.name}' could not run on these inputs: ${reason}`, {
        cause: error,
      });
    }
  }

  async #acquire(key: string, ref: ModelRef) {
    try {
      const lease = await this.#cache.acquire(key);
      if (this.#failed.delete(key)) this.#changed();
      return lease;
    } catch (error) {
      const failure = SwitchyardError.from(error);
      if (failure.code === "model_load_failed") {
        this.#failed.set(key, { ref, reason: failure.message, at: Date.now() });
        this.#changed();
      }
      throw failure;
    }
  }

  /** Loads a model (the repository extension's load, and --preload). */
  async load(name: string, version?: string): Promise<ModelSignature> {
    const ref = await this.resolve(name, version);
    const lease = await this.#acquire(modelKey(ref), ref);
    try {
      return { ref, inputs: lease.session.inputs, outputs: lease.session.outputs };
    } finally {
      lease.release();
    }
  }

  /** Unloads every loaded version of a model (or the one given); false when none was loaded. */
  async unload(name: string, version?: string): Promise<boolean> {
    const keys = this.#cache
      .snapshot()
      .loaded.map((entry) => entry.key)
      .filter((key) => key.startsWith(`${name}:`) && (version === undefined || key === `${name}:${version}`));
    const results = await Promise.all(keys.map((key) => this.#cache.unload(key)));
    return results.some(Boolean);
  }

  isLoaded(ref: ModelRef): boolean {
    const key = modelKey(ref);
    return this.#cache.snapshot().loaded.some((entry) => entry.key === key);
  }

  state(): ReplicaState {
    const snapshot = this.#cache.snapshot();
    const now = Date.now();
    for (const [key, failure] of this.#failed)
      if (now - failure.at > FAILED_LOAD_MEMORY_MS) this.#failed.delete(key);
    return {
      id: this.id,
      device: deviceLabel(this.device),
      maxConcurrency: this.#slots.capacity,
      inFlight: this.#slots.inUse,
      queued: this.#slots.waiting,
      maxModels: this.#limits.maxModels,
      memoryBudgetBytes: this.#limits.maxModelBytes,
      memoryUsedBytes: snapshot.bytes,
      loaded: snapshot.loaded.map((entry) => ({
        ...parseModelKey(entry.key),
        bytes: entry.bytes,
        inFlight: entry.inFlight,
        idleMs: Math.max(0, performance.now() - entry.lastUsedAt),
      })),
      loading: snapshot.loading.map(parseModelKey),
      timings: this.#timings.toJSON(),
      failed: [...this.#failed.values()].map(({ ref, reason }) => ({ ...ref, reason })),
    };
  }

  onChange(listener: (state: ReplicaState) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #changed(): void {
    if (this.#listeners.size === 0) return;
    const state = this.state();
    for (const listener of this.#listeners) listener(state);
  }

  async close(): Promise<void> {
    await this.#cache.close();
  }
}
