import type { MessagePort } from "node:worker_threads";
import { SwitchyardError } from "../../shared/errors.ts";
import { declaredBatching } from "../../shared/model-config.ts";
import { modelKey, parseModelKey, requestedModelKey } from "../../shared/model-names.ts";
import type { OutputClasses } from "../../shared/oip/classification.ts";
import type { ModelStatistics } from "../../shared/oip/statistics.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import type { ModelSignature } from "../../shared/protocol/model-signatures.ts";
import type { ModelRef, ReplicaState } from "../../shared/protocol/replica-state.ts";
import type { ModelRepository } from "../models/repository.ts";
import { withinGrace } from "../within-grace.ts";
import { bucketPlan, dropPadding } from "./batch-buckets.ts";
import { type BatchingDefaults, DEFAULT_BATCHING } from "./batch-settings.ts";
import { type Executed, executeOne, ModelBatcher } from "./batcher.ts";
import { recycleInputs } from "./buffer-pool.ts";
import { deviceLabel, type ReplicaDevice } from "./device.ts";
import {
  type LaneReport,
  type LaneServedRequest,
  type LaneSettings,
  runsIn,
  servedIn,
} from "./lane-protocol.ts";
import { ModelCache } from "./model-cache.ts";
import { type ModelMemoryBudget, modelMemoryBudget } from "./model-memory-budget.ts";
import { ModelStatisticsBook } from "./model-statistics.ts";
import { ModelTimingsTable } from "./model-timings.ts";
import { type ModelSession, OnnxModelLoader } from "./onnx-loader.ts";
import { runRefusal } from "./ort-tensors.ts";
import type { SessionTuning } from "./session-options.ts";
import { SessionGoneError } from "./session-thread.ts";
import { Slots } from "./slots.ts";
import { answersOf, batchSizeOf, stackingKey } from "./tensor-batch.ts";
import { checkInputs, wantedOutputs } from "./tensor-checks.ts";
import { VersionMemo } from "./version-memo.ts";
import { BatchRunError, type BatchRunResult, type RunResult, type WorkerSession } from "./worker-session.ts";

export interface ReplicaOptions {
  id: string;
  device: ReplicaDevice;
  repository: ModelRepository;
  maxModels: number;
  /** Bytes of loaded models (`--max-model-memory`); omitted: the device's default (model-memory-budget.ts). */
  maxModelBytes?: number | undefined;
  /** Replicas that share this replica's device, and so its default memory budget. */
  replicasOnDevice?: number | undefined;
  /** Unload a model idle this long; 0 keeps models until evicted. */
  keepAliveMs: number;
  /** Requests the replica takes at once: running, or gathering into a batch. */
  maxConcurrency: number;
  intraOpThreads?: number | undefined;
  /** Defaults for models whose config.json says nothing about batching (DEFAULT_BATCHING otherwise). */
  batching?: Partial<BatchingDefaults> | undefined;
  /** Session options beyond the defaults (session config entries, the memory pattern). */
  session?: Omit<SessionTuning, "intraOpThreads"> | undefined;
}

export interface InferCall {
  model: string;
  /** Omitted: the repository's highest version. */
  version?: string;
  inputs: Tensor[];
  /** Output names to return; omitted: all of them. */
  outputs?: string[];
  signal?: AbortSignal;
  /**
   * The inputs' typed arrays were decoded for this call alone: they may move to the model's worker thread
   * without a copy (and are then empty here). Off by default, since a caller may send the same tensors
   * again; for a 4.9 MB image the copy costs about 1.2 ms on an H100 host.
   */
  handOverInputs?: boolean;
  /**
   * The client's id for the request (the response's X-Request-Id: shared/oip/request-options.ts
   * requestIdHeader), named by the log lines about it wherever it is served.
   */
  requestId?: string;
}

export interface InferTimings {
  /** Waiting for a concurrency slot on this replica, then for a batch to run. */
  queueMs: number;
  /** Waiting for the model to load (0 on a hit). */
  loadMs: number;
  /** The run that computed the outputs: with batching, the whole batch's run. */
  inferMs: number;
  /** Of inferMs, what onnxruntime itself took on the session's thread (the rest: the way there and back). */
  sessionMs: number;
}

/** What a served request says about how it ran, its outputs aside (what metrics and logs read). */
export type ServedInfo = Pick<InferOutcome, "model" | "cache" | "timings" | "batch">;

export interface InferOutcome {
  model: ModelRef;
  outputs: Tensor[];
  cache: "hit" | "miss";
  timings: InferTimings;
  /** The run that served the request: how many requests, and rows along the first dimension, it held. */
  batch?: { requests: number; rows: number };
  /** How the model's outputs are classified, for the requests that ask (shared/oip/classification.ts). */
  classes: OutputClasses;
}

/** A lane granted to an intake thread (lane-protocol.ts), holding a lease on its model's session. */
export interface LaneGrant {
  port: MessagePort;
  model: ModelRef;
  /** What the session serves the lane with: the model's specs (an intake thread checks requests with them). */
  settings: LaneSettings;
  /** How the model's outputs are classified, for the outcomes of the lane's requests (the intake thread's). */
  classes: OutputClasses;
  /** Ends the lane's lease, once its requests are answered. Idempotent. */
  close(): void;
}

// Failed loads are remembered this long so that the state sent to the router shows them.
const FAILED_LOAD_MEMORY_MS = 60_000;
// How old a resolved version may get before the repository is read again (in the background).
const VERSION_REFRESH_MS = 1000;
/**
 * How long a reader of the statistics or metrics waits for the session threads' latest reports
 * (lanesReported): a thread answers between runs, so one in a long run would otherwise hold the reader.
 */
const LANE_REPORT_WAIT_MS = 250;

/** One request waiting in a model's batcher: its checked inputs and the outputs it wants. */
interface BatchRequest {
  size: number;
  /** Replaced by the worker's copy when a failed batch gives handed-over inputs back (#runStacked). */
  inputs: Tensor[];
  wanted: string[];
  /** Its inputs may move to the worker (InferCall.handOverInputs). */
  handOver: boolean;
}

/**
 * One execution context (one GPU, or the CPU) with its own LRU cache of onnxruntime sessions and its own
 * concurrency slots. It reports its state after every change through `onChange`.
 */
export class Replica {
  readonly id: string;
  readonly device: ReplicaDevice;
  readonly #repository: ModelRepository;
  readonly #cache: ModelCache<ModelSession>;
  readonly #slots: Slots;
  readonly #timings = new ModelTimingsTable();
  readonly #statistics = new ModelStatisticsBook();
  readonly #failed = new Map<string, { ref: ModelRef; reason: string; at: number }>();
  /** Models whose config.json says `"idempotent": false` ("name:version"): the gateway must not rerun them. */
  /** Numbers each state snapshot (ReplicaState.seq): the gateway orders what it hears of this replica by it. */
  #stateSeq = 0;
  readonly #notIdempotent = new Set<string>();
  readonly #listeners = new Set<(state: ReplicaState) => void>();
  /** A report of the state to the listeners is on its way (#changed). */
  #reportDue = false;
  #closed = false;
  readonly #limits: { maxModels: number; maxModelBytes: number };
  readonly #versions = new VersionMemo(VERSION_REFRESH_MS);
  /** One batcher per loaded session; it goes with the session when the model is unloaded. */
  readonly #batchers = new WeakMap<ModelSession, ModelBatcher<BatchRequest, RunResult>>();
  /** Sessions whose worker died, already on their way out of the cache. */
  readonly #dead = new WeakSet<ModelSession>();
  /** The byte budget of loaded models, and where it comes from. */
  readonly memoryBudget: ModelMemoryBudget;
  /** Loaded models whose batch buckets' threads take their lanes' batches (#connectBuckets). */
  readonly #bucketsConnected = new WeakMap<ModelSession, Promise<void>>();
  /** The lanes open to each loaded model, by key: each told to stop when the model is unloaded. */
  readonly #lanes = new Map<string, Set<() => void>>();
  /** Sessions that served lanes, and so may hold a report not sent yet (LANE_REPORT_INTERVAL_MS). */
  readonly #reporting = new Set<WorkerSession>();

  constructor(options: ReplicaOptions) {
    this.id = options.id;
    this.device = options.device;
    this.#repository = options.repository;
    this.memoryBudget = modelMemoryBudget(options.device, {
      configured: options.maxModelBytes,
      replicasOnDevice: options.replicasOnDevice,
    });
    this.#limits = { maxModels: options.maxModels, maxModelBytes: this.memoryBudget.bytes };
    const loader = new OnnxModelLoader(
      options.repository,
      options.device,
      {
        ...options.session,
        intraOpThreads: options.intraOpThreads,
        batching: { ...DEFAULT_BATCHING, ...definedOnly(options.batching ?? {}) },
      },
      (key, milliseconds) => this.#timings.recordLoad(key, milliseconds),
    );
    this.#cache = new ModelCache({
      limits: { maxModels: options.maxModels, maxBytes: this.memoryBudget.bytes },
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
    if (model.config.idempotent === false) this.#notIdempotent.add(modelKey(model));
    return { name: model.name, version: model.version };
  }

  /** resolve(), reusing a recent answer: requests should not each read the repository. */
  #resolveForInfer(name: string, version?: string): Promise<ModelRef> {
    const memoKey = requestedModelKey(name, version);
    return this.#versions.resolve(memoKey, () => this.resolve(name, version));
  }

  async infer(call: InferCall): Promise<InferOutcome> {
    const ref = await this.#resolveForInfer(call.model, call.version);
    const key = modelKey(ref);
    const queuedAt = performance.now();
    try {
      const outcome = await this.#inferResolved(call, ref, key, queuedAt);
      const rows = outcome.batch?.rows ?? 0;
      this.#statistics.succeeded(
        ref,
        { totalMs: performance.now() - queuedAt, queueMs: outcome.timings.queueMs },
        outcome.batching ? Math.max(1, rows) : 1,
      );
      return outcome;
    } catch (error) {
      this.#statistics.failed(ref, performance.now() - queuedAt);
      throw error;
    }
  }

  async #inferResolved(
    call: InferCall,
    ref: ModelRef,
    key: string,
    queuedAt: number,
  ): Promise<InferOutcome & { batching: boolean }> {
    const releaseSlot = await this.#slots.acquire(call.signal);
    const slotMs = performance.now() - queuedAt;
    try {
      const lease = await this.#acquire(key, ref);
      try {
        const model = lease.session;
        // Checked here, before the request can join a batch: a bad request fails alone.
        checkInputs(ref.name, call.inputs, model.inputs);
        const wanted = wantedOutputs(ref.name, model.outputs, call.outputs);
        const executed = await this.#execute(model, key, call, wanted);
        return {
          model: ref,
          outputs: executed.outputs,
          cache: lease.hit ? "hit" : "miss",
          timings: {
            queueMs: slotMs + executed.queuedMs,
            loadMs: lease.hit ? 0 : lease.waitedMs,
            inferMs: executed.runMs,
            sessionMs: executed.sessionMs,
          },
          batch: { requests: executed.requests, rows: executed.rows },
          classes: model.classes,
          batching: model.batching !== undefined,
        };
      } finally {
        lease.release();
      }
    } finally {
      releaseSlot();
    }
  }

  /** Through the model's batcher when it batches and the request fits in a batch; else a run of its own. */
  #execute(model: ModelSession, key: string, call: InferCall, wanted: string[]): Promise<Executed> {
    const size = batchSizeOf(call.inputs);
    const request: BatchRequest = {
      size: size ?? 0,
      inputs: call.inputs,
      wanted,
      handOver: call.handOverInputs === true,
    };
    return executeOne(
      size === undefined ? undefined : this.#batcherFor(model, key),
      request,
      stackingKey(call.inputs),
      call.signal,
      (requests) => this.#runStacked(model, key, requests),
    );
  }

  #batcherFor(model: ModelSession, key: string): ModelBatcher<BatchRequest, RunResult> | undefined {
    if (model.batching === undefined) return undefined;
    let batcher = this.#batchers.get(model);
    if (batcher === undefined) {
      batcher = new ModelBatcher(model.batching, (requests) => this.#runStacked(model, key, requests));
      this.#batchers.set(model, batcher);
    }
    return batcher;
  }

  /**
   * One session run for one or more requests: their inputs stacked along the first dimension (on the
   * session's thread), the union of the outputs they want fetched, and each output split back into every
   * request's rows.
   */
  async #runStacked(model: ModelSession, key: string, requests: BatchRequest[]): Promise<RunResult[]> {
    const names = [...new Set(requests.flatMap((request) => request.wanted))];
    const rows = requests.reduce((sum, request) => sum + request.size, 0);
    // With batch buckets the run is padded up to its bucket and goes to that bucket's session.
    const { bucket, padTo } = bucketPlan(rows, model.batching?.buckets);
    const session = (bucket === undefined ? undefined : model.buckets?.get(bucket)) ?? model.session;
    const started = performance.now();
    const ran = await this.#run(model, session, key, requests, names, padTo);
    // The run is over and nothing reads its inputs again (a request's are its own, or were copied for
    // the run): their buffers go back to the pool for the next requests (buffer-pool.ts).
    recycleInputs(ran.parts);
    const results = padTo === undefined ? ran.outputs : dropPadding(ran.outputs, rows, padTo);
    const done = performance.now();
    this.#timings.recordRun(key, done - started);
    this.modelRan(model.ref, 1);
    const answers = answersOf(requests, names, results);
    this.#statistics.executed(model.ref, rows, {
      inputMs: ran.stackMs,
      inferMs: done - started - ran.stackMs,
      outputMs: performance.now() - done,
    });
    return answers.map((outputs) => ({ outputs, sessionMs: ran.sessionMs }));
  }

  async #run(
    model: ModelSession,
    session: WorkerSession,
    key: string,
    requests: BatchRequest[],
    outputs: string[],
    padTo: number | undefined,
  ): Promise<BatchRunResult> {
    const parts = requests.map((request) => request.inputs);
    const handOver = requests.map((request) => request.handOver);
    try {
      return await session.runBatch(parts, outputs, { handOver, padTo });
    } catch (failure) {
      const error = failure instanceof BatchRunError ? (failure.cause as Error) : failure;
      if (failure instanceof BatchRunError && failure.parts !== undefined) {
        // Handed-over inputs moved to the worker and came back with the failure: the batcher runs each
        // request again alone (batcher.ts), from these. Copies are dropped (the originals are intact).
        requests.forEach((request, index) => {
          const back = failure.parts?.[index];
          if (request.handOver && back !== undefined) request.inputs = back;
        });
      }
      const reason = error instanceof Error ? error.message : String(error);
      if (error instanceof SessionGoneError) {
        if (error.reason === "exited") this.#dropDead(model, key);
        throw new SwitchyardError(
          error.reason === "exited" ? "internal" : "unavailable",
          `model '${model.ref.name}' could not run: ${reason}`,
          { cause: error },
        );
      }
      throw runRefusal(model.ref.name, error);
    }
  }

  /**
   * A model whose worker died cannot run again: it leaves the cache (once its requests, all failing, have
   * ended), and the next request loads it afresh. Every request waiting on that worker fails at once, so
   * this runs before any later load could put a new session under the same key.
   */
  #dropDead(model: ModelSession, key: string): void {
    if (this.#dead.has(model)) return;
    this.#dead.add(model);
    void this.#cache.unload(key);
  }

  #acquire(key: string, ref: ModelRef) {
    return this.#remembered(key, ref, () => this.#cache.acquire(key));
  }

  /** Remembers how a load ended, so the state the router sees shows a model whose load failed here. */
  async #remembered<T>(key: string, ref: ModelRef, load: () => Promise<T>): Promise<T> {
    try {
      const loaded = await load();
      if (this.#failed.delete(key)) this.#changed();
      return loaded;
    } catch (error) {
      const failure = SwitchyardError.from(error);
      if (failure.code === "model_load_failed") {
        this.#failed.set(key, { ref, reason: failure.message, at: Date.now() });
        this.#changed();
      }
      throw failure;
    }
  }

  /**
   * Loads a model (--preload, and model control's load); with `pin`, keeps it loaded until unpinned or
   * unloaded: it is then never evicted and never expires. Returns what the loaded session takes and gives.
   */
  async load(name: string, version?: string, options: { pin?: boolean } = {}): Promise<ModelSignature> {
    const ref = await this.resolve(name, version);
    this.#versions.set(requestedModelKey(name, version), ref);
    const key = modelKey(ref);
    if (options.pin === true) await this.#pin(key, ref);
    const lease = await this.#acquire(key, ref);
    try {
      const { inputs, outputs, config } = lease.session;
      return { ...ref, inputs, outputs, batching: declaredBatching(config) };
    } finally {
      lease.release();
    }
  }

  #pin(key: string, ref: ModelRef): Promise<void> {
    return this.#remembered(key, ref, () => this.#cache.pin(key));
  }

  /**
   * A lane to the session of a model loaded here (lane-protocol.ts), for an intake thread: undefined when the
   * model is not loaded (the main path loads it). `revoke` is told when the model is being unloaded: the
   * lane's holder stops sending and closes it once its requests are answered; the unload completes then.
   */
  async openLane(
    name: string,
    version: string | undefined,
    options: { maxQueue: number; revoke: () => void },
  ): Promise<LaneGrant | undefined> {
    if (this.#closed) return undefined;
    const ref = await this.#resolveForInfer(name, version);
    if (!this.isLoaded(ref)) return undefined;
    const key = modelKey(ref);
    const lease = await this.#acquire(key, ref);
    const model = lease.session;
    let port: MessagePort;
    let settings: LaneSettings;
    try {
      if (!model.session.running || this.#dead.has(model)) {
        lease.release();
        return undefined;
      }
      await this.#connectBuckets(model);
      settings = {
        model: ref.name,
        inputs: model.inputs,
        outputs: model.outputs,
        batching: model.batching,
        maxConcurrency: this.#slots.capacity,
        maxQueue: options.maxQueue,
      };
      port = await model.session.openLane(settings, (report) =>
        this.#laneReport(ref, key, model.batching !== undefined, report),
      );
      this.#forgetReleased();
      this.#reporting.add(model.session);
    } catch (error) {
      lease.release();
      throw error;
    }
    // Unloaded meanwhile (it waits for this lease): no lane to a session on its way out.
    if (!this.isLoaded(ref)) {
      port.close();
      lease.release();
      return undefined;
    }
    let lanes = this.#lanes.get(key);
    if (lanes === undefined) {
      lanes = new Set();
      this.#lanes.set(key, lanes);
    }
    lanes.add(options.revoke);
    let open = true;
    return {
      port,
      model: ref,
      settings,
      classes: model.classes,
      close: () => {
        if (!open) return;
        open = false;
        lanes.delete(options.revoke);
        if (lanes.size === 0 && this.#lanes.get(key) === lanes) this.#lanes.delete(key);
        lease.release();
      },
    };
  }

  /**
   * With batch buckets, the model's lanes are served on its first session's thread and send other sizes'
   * batches to their buckets' threads: connected once, when its first lane opens.
   */
  #connectBuckets(model: ModelSession): Promise<void> {
    let connected = this.#bucketsConnected.get(model);
    if (connected === undefined) {
      connected = Promise.all(
        [...(model.buckets ?? [])]
          .filter(([, bucket]) => bucket !== model.session)
          .map(([size, bucket]) => model.session.connectBucket(size, bucket)),
      ).then(() => undefined);
      this.#bucketsConnected.set(model, connected);
    }
    return connected;
  }

  /** What a model's lanes served: counted as the requests on the main thread's path are. */
  #laneReport(ref: ModelRef, key: string, batching: boolean, report: LaneReport): void {
    for (const served of servedIn(report)) {
      if (served.ok) {
        this.#statistics.succeeded(
          ref,
          { totalMs: served.totalMs, queueMs: served.queueMs },
          batching ? Math.max(1, served.batch.rows) : 1,
        );
      } else {
        this.#statistics.failed(ref, served.totalMs);
      }
      this.laneServed(ref, served);
    }
    let runs = 0;
    for (const run of runsIn(report)) {
      runs += 1;
      this.#timings.recordRun(key, run.stackMs + run.runMs);
      this.#statistics.executed(ref, run.rows, { inputMs: run.stackMs, inferMs: run.runMs, outputMs: 0 });
    }
    if (runs > 0) {
      this.modelRan(ref, runs);
      this.#changed();
    }
  }

  /** The session of `model` ran `runs` times (a batch is one run): for a subclass that counts them (MeteredReplica). */
  protected modelRan(_model: ModelRef, _runs: number): void {}

  /** A request a lane served (or failed): for a subclass that counts requests (MeteredReplica). */
  protected laneServed(_model: ModelRef, _served: LaneServedRequest): void {}

  /** Unloads every loaded version of a model (or the one given), pinned or not; false when none was loaded. */
  async unload(name: string, version?: string): Promise<boolean> {
    // Lanes to it stop taking requests; the unload completes once they closed (their leases end).
    for (const key of this.#keysOf(name, version)) for (const revoke of this.#lanes.get(key) ?? []) revoke();
    const results = await Promise.all(this.#keysOf(name, version).map((key) => this.#cache.unload(key)));
    return results.some(Boolean);
  }

  /** Lets every version of a model (or the one given) be evicted again; false when none was pinned. */
  unpin(name: string, version?: string): boolean {
    return this.#keysOf(name, version)
      .map((key) => this.#cache.unpin(key))
      .some(Boolean);
  }

  /** The gateway's keep-alive for every version of a model (undefined: its config.json's or the agent's). */
  setKeepAlive(name: string, keepAliveMs: number | undefined): void {
    this.#cache.setKeepAlive(name, (key) => parseModelKey(key).name === name, keepAliveMs);
  }

  /** Keys of the model loaded here, or pinned while their load is still running (an unload cancels the pin). */
  #keysOf(name: string, version: string | undefined): string[] {
    const loaded = this.#cache.snapshot().loaded.map((entry) => entry.key);
    return [...new Set([...loaded, ...this.#cache.pinnedKeys()])].filter((key) => {
      const ref = parseModelKey(key);
      return ref.name === name && (version === undefined || ref.version === version);
    });
  }

  /**
   * Resolves once every request the model sessions' lanes answered so far is counted here (their reports
   * come at most every LANE_REPORT_INTERVAL_MS): what a reader of the statistics or metrics awaits first.
   */
  async lanesReported(): Promise<void> {
    this.#forgetReleased();
    // A session being released reports before it goes (session-worker.ts). A thread busy past
    // LANE_REPORT_WAIT_MS (a long run) is not waited for: the reader gets the figures as they are.
    const asked = [...this.#reporting].map((session) => session.reportLanes().catch(() => undefined));
    await withinGrace(Promise.all(asked), LANE_REPORT_WAIT_MS);
  }

  #forgetReleased(): void {
    for (const session of this.#reporting) if (!session.running) this.#reporting.delete(session);
  }

  /** Inference statistics of the models this replica ran (shared/oip/statistics.ts). */
  statistics(name?: string, version?: string): ModelStatistics[] {
    return this.#statistics.snapshot(name, version);
  }

  isLoaded(ref: ModelRef): boolean {
    const key = modelKey(ref);
    return this.#cache.snapshot().loaded.some((entry) => entry.key === key);
  }

  /**
   * The replica as it is now, with every model's timings: what the agent itself shows and routes on. Its
   * `timings` is the replica's table itself (model-timings.ts), read as it is when read: cheap however many
   * models the replica ran, but not a record of the moment the state was taken.
   */
  state(): ReplicaState {
    return this.#state(() => this.#timings.all());
  }

  /**
   * The state a result or error frame carries to the gateway: its timings only the models' loaded or loading
   * and those changed since the last state frame (ReplicaState.timings), so that it does not grow with every
   * model this replica ever ran.
   */
  resultState(): ReplicaState {
    return this.#state((held) => this.#timings.unsent(held));
  }

  /** The state a state frame carries: as resultState(), those changes then count as sent; all when `whole`. */
  frameState(whole: boolean): ReplicaState {
    return this.#state((held) => this.#timings.takeUnsent(held, whole));
  }

  #state(timingsOf: (held: string[]) => Readonly<ReplicaState["timings"]>): ReplicaState {
    this.#stateSeq += 1;
    const snapshot = this.#cache.snapshot();
    const now = Date.now();
    for (const [key, failure] of this.#failed)
      if (now - failure.at > FAILED_LOAD_MEMORY_MS) this.#failed.delete(key);
    return {
      id: this.id,
      seq: this.#stateSeq,
      device: deviceLabel(this.device),
      maxConcurrency: this.#slots.capacity,
      // Requests in the replica: running, or gathering into a batch.
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
        pinned: entry.pinned,
        ...(this.#notIdempotent.has(entry.key) ? { idempotent: false } : {}),
      })),
      loading: snapshot.loading.map(parseModelKey),
      timings: timingsOf([...snapshot.loaded.map((entry) => entry.key), ...snapshot.loading]),
      failed: [...this.#failed.values()].map(({ ref, reason }) => ({ ...ref, reason })),
    };
  }

  onChange(listener: (state: ReplicaState) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /**
   * Listeners hear the state once per turn of the event loop that changed it: a request changes it four
   * times (its slot and its lease, taken and given back), a batch's requests all finish in one turn, and at
   * thousands of requests a second one snapshot per change was a large share of the main thread's time
   * (bench/results/hot-path-cuda.md, hot-path-cpu-main-thread.md). The snapshot is taken at the turn's end (its check phase), after the
   * turn's changes. Whoever routes on it counts its own requests in flight (shared/routing/dispatcher.ts),
   * as the gateway does with reports that come over the network.
   */
  #changed(): void {
    if (this.#listeners.size === 0 || this.#reportDue) return;
    this.#reportDue = true;
    setImmediate(() => {
      this.#reportDue = false;
      // Closed: nobody routes on it any more (its last changes were its models unloading).
      if (this.#listeners.size === 0 || this.#closed) return;
      // Out of every caller's stack here: thrown on, an error would end the agent.
      try {
        const state = this.state();
        for (const listener of this.#listeners) {
          try {
            listener(state);
          } catch (error) {
            console.error("replica: a state listener threw", error);
          }
        }
      } catch (error) {
        console.error("replica: its state could not be read", error);
      }
    });
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#cache.close();
  }
}

/** The entries of `partial` that are set: `{ maxBatchSize: undefined }` keeps the default. */
function definedOnly<T extends object>(partial: Partial<T>): Partial<T> {
  return Object.fromEntries(Object.entries(partial).filter(([, value]) => value !== undefined)) as Partial<T>;
}
