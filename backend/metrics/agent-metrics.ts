import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import { SwitchyardError } from "../../shared/errors.ts";
import { LATENCY_BUCKETS_SECONDS } from "../../shared/metrics/latency-buckets.ts";
import { replicaChanges } from "../../shared/metrics/replica-changes.ts";
import { modelKey } from "../../shared/model-names.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import type { ServedInfo } from "../replica/replica.ts";
import { ModelLabels } from "./model-labels.ts";

const P = "switchyard_agent_";
/** Requests in the run that served a request; powers of two, as batch sizes usually are. */
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];

export interface AgentMetricsOptions {
  name: string;
  version: string;
  /** Every replica's state now, read at each scrape. */
  states: () => readonly ReplicaState[];
  /** Bytes in use and in all on a GPU (nvidia-smi), read at each scrape; undefined when unknown. */
  gpuMemory?: (deviceId: number) => Promise<{ used?: number | undefined; total?: number | undefined }>;
  /**
   * Resolves once what happened before a scrape is counted: requests that session threads answered on
   * lanes reach the main thread in reports a few milliseconds apart (Replica.lanesReported).
   */
  settle?: () => Promise<void>;
}

/**
 * The agent's Prometheus metrics (prom-client), the gateway's figures from the agent's side plus what only
 * the agent knows: device memory, batch sizes, how long each load took. Events are counted as they happen
 * (MeteredReplica calls in); gauges are read from the replicas' states when Prometheus scrapes.
 */
export class AgentMetrics {
  readonly registry = new Registry();
  readonly #models = new ModelLabels();
  /** When each model started loading, per replica ("<replica> <name:version>"), to time the load. */
  readonly #loadingSince = new Map<string, number>();
  readonly #requests: Counter<"replica" | "model" | "status">;
  readonly #hits: Counter<"replica" | "model">;
  readonly #misses: Counter<"replica" | "model">;
  readonly #loads: Counter<"replica" | "model">;
  readonly #loadFailures: Counter<"replica" | "model">;
  readonly #evictions: Counter<"replica" | "model">;
  readonly #runs: Counter<"replica" | "model">;
  readonly #queueSeconds: Histogram<"replica">;
  readonly #loadSeconds: Histogram<"replica">;
  readonly #inferenceSeconds: Histogram<"replica">;
  readonly #requestSeconds: Histogram<"replica">;
  readonly #loadDuration: Histogram<"replica">;
  readonly #batchRequests: Histogram<"replica">;
  readonly #settle: (() => Promise<void>) | undefined;

  constructor(options: AgentMetricsOptions) {
    this.#settle = options.settle;
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    // prom-client names these gauges with a counter's "_total" suffix, which Prometheus' linter (promtool
    // check metrics) rejects; the handles and requests they count are in nodejs_active_resources anyway.
    for (const name of [
      "nodejs_active_handles_total",
      "nodejs_active_requests_total",
      "nodejs_active_resources_total",
    ]) {
      this.registry.removeSingleMetric(name);
    }
    new Gauge({
      name: `${P}info`,
      help: "This agent: its name and version (always 1).",
      labelNames: ["name", "version"],
      registers,
    }).set({ name: options.name, version: options.version }, 1);

    const counter = <L extends string>(name: string, help: string, labelNames: L[]) =>
      new Counter<L>({ name: `${P}${name}`, help, labelNames, registers });
    const histogram = (name: string, help: string, buckets: readonly number[] = LATENCY_BUCKETS_SECONDS) =>
      new Histogram<"replica">({
        name: `${P}${name}`,
        help,
        labelNames: ["replica"],
        buckets: [...buckets],
        registers,
      });

    this.#requests = counter("requests_total", "Requests run by a replica, by model and HTTP status.", [
      "replica",
      "model",
      "status",
    ]);
    this.#hits = counter("cache_hits_total", "Requests whose model was loaded when they asked.", [
      "replica",
      "model",
    ]);
    this.#misses = counter("cache_misses_total", "Requests that waited for their model to load.", [
      "replica",
      "model",
    ]);
    this.#loads = counter("model_loads_total", "Model loads finished on a replica.", ["replica", "model"]);
    this.#loadFailures = counter("model_load_failures_total", "Model loads that failed.", [
      "replica",
      "model",
    ]);
    this.#evictions = counter(
      "model_evictions_total",
      "Models unloaded: evicted for room, idle past --keep-alive, or unloaded on request.",
      ["replica", "model"],
    );
    this.#runs = counter(
      "model_runs_total",
      "Session runs (one per batch); requests_total / model_runs_total is the mean batch size.",
      ["replica", "model"],
    );
    this.#queueSeconds = histogram(
      "queue_seconds",
      "Time a request waited for a slot and for its batch to run.",
    );
    this.#loadSeconds = histogram(
      "load_seconds",
      "Time a request waited for its model to load (misses only).",
    );
    this.#inferenceSeconds = histogram(
      "inference_seconds",
      "Time of the run that computed a request's outputs.",
    );
    this.#requestSeconds = histogram(
      "request_duration_seconds",
      "Time a replica spent on a request, failures included.",
    );
    this.#loadDuration = histogram(
      "model_load_duration_seconds",
      "Time one model load took, from start to loaded.",
    );
    this.#batchRequests = histogram(
      "batch_requests",
      "Requests in the run that served each request (a batch of 4 is observed 4 times).",
      BATCH_BUCKETS,
    );

    const replicaGauge = (name: string, help: string, value: (state: ReplicaState) => number) =>
      new Gauge({
        name: `${P}${name}`,
        help,
        labelNames: ["replica", "device"],
        registers,
        collect() {
          this.reset();
          for (const state of options.states())
            this.set({ replica: state.id, device: state.device }, value(state));
        },
      });
    replicaGauge(
      "replica_in_flight",
      "Requests a replica is running or gathering into a batch.",
      (s) => s.inFlight,
    );
    replicaGauge("replica_queued", "Requests waiting for one of the replica's slots.", (s) => s.queued);
    replicaGauge(
      "replica_slots",
      "Requests a replica takes at once (--max-concurrency).",
      (s) => s.maxConcurrency,
    );
    replicaGauge("replica_models_loaded", "Models loaded on the replica.", (s) => s.loaded.length);
    replicaGauge("replica_models_loading", "Models loading on the replica.", (s) => s.loading.length);
    replicaGauge(
      "replica_memory_used_bytes",
      "Bytes of models loaded on the replica.",
      (s) => s.memoryUsedBytes,
    );
    replicaGauge(
      "replica_memory_budget_bytes",
      "Bytes of models the replica may hold.",
      (s) => s.memoryBudgetBytes,
    );

    const gpuMemory = options.gpuMemory;
    if (gpuMemory !== undefined) {
      const gpus = () =>
        [...new Set(options.states().map((state) => state.device))].filter((d) => d.startsWith("cuda:"));
      const deviceGauge = (name: string, help: string, pick: "used" | "total") =>
        new Gauge({
          name: `${P}${name}`,
          help,
          labelNames: ["device"],
          registers,
          async collect() {
            this.reset();
            for (const device of gpus()) {
              const memory = await gpuMemory(Number(device.slice("cuda:".length)));
              const bytes = memory[pick];
              if (bytes !== undefined) this.set({ device }, bytes);
            }
          },
        });
      deviceGauge("device_memory_used_bytes", "GPU memory in use by every process (nvidia-smi).", "used");
      deviceGauge("device_memory_total_bytes", "GPU memory in all (nvidia-smi).", "total");
    }
  }

  /** A request a replica answered. */
  served(replica: string, outcome: ServedInfo, totalMs: number): void {
    const model = this.#models.label(outcome.model.name);
    this.#requests.inc({ replica, model, status: "200" });
    (outcome.cache === "hit" ? this.#hits : this.#misses).inc({ replica, model });
    this.#queueSeconds.observe({ replica }, outcome.timings.queueMs / 1000);
    if (outcome.cache === "miss") this.#loadSeconds.observe({ replica }, outcome.timings.loadMs / 1000);
    this.#inferenceSeconds.observe({ replica }, outcome.timings.inferMs / 1000);
    this.#requestSeconds.observe({ replica }, totalMs / 1000);
    if (outcome.batch !== undefined) this.#batchRequests.observe({ replica }, outcome.batch.requests);
  }

  /** A request a replica failed (or was cancelled on). */
  failed(replica: string, modelName: string, error: unknown, totalMs: number): void {
    const status = String(SwitchyardError.from(error).status);
    this.#requests.inc({ replica, model: this.#models.label(modelName), status });
    this.#requestSeconds.observe({ replica }, totalMs / 1000);
  }

  /** A replica's state changed: loads started, finished, failed; models unloaded (its runs: modelRan). */
  replicaChanged(replica: string, before: ReplicaState | undefined, after: ReplicaState, now: number): void {
    const changes = replicaChanges(before, after);
    const key = (ref: { name: string; version: string }) => `${replica} ${modelKey(ref)}`;
    for (const ref of changes.loading) this.#loadingSince.set(key(ref), now);
    for (const ref of changes.loaded) {
      this.#loads.inc({ replica, model: this.#models.label(ref.name) });
      const since = this.#loadingSince.get(key(ref));
      if (since !== undefined) this.#loadDuration.observe({ replica }, (now - since) / 1000);
      this.#loadingSince.delete(key(ref));
    }
    for (const ref of changes.failed) {
      this.#loadFailures.inc({ replica, model: this.#models.label(ref.name) });
      this.#loadingSince.delete(key(ref));
    }
    for (const ref of changes.unloaded) this.#evictions.inc({ replica, model: this.#models.label(ref.name) });
  }

  /** A model's session ran `runs` times on a replica (a batch is one run). */
  modelRan(replica: string, modelName: string, runs: number): void {
    this.#runs.inc({ replica, model: this.#models.label(modelName) }, runs);
  }

  /** The exposition Prometheus reads. */
  async text(): Promise<{ contentType: string; body: string }> {
    await this.#settle?.();
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
