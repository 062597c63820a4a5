import { modelKey } from "../../shared/model-names.ts";

import type { PolicyReport, PoolSnapshot } from "../pool-calls.ts";
import type { QueueReport } from "../queue/queue-calls.ts";
import type { StorageWrites } from "../registry/storage-meter.ts";
import { Exposition, type HistogramSample, type Labels } from "./exposition.ts";
import { type HistogramData, LATENCY_BUCKETS_SECONDS } from "./histogram.ts";
import { type PoolCounters, requestLabels } from "./pool-counters.ts";

/** What one pool's registry reports for a scrape: its state now, and its counters. */
export interface PoolReport {
  pool: string;
  snapshot: PoolSnapshot;
  counters: PoolCounters;
  /** The registry's writes since it started (storage-meter.ts). */
  storageWrites: StorageWrites;
  /** Models with a serving policy (PUT /admin/models/{m}/policy, or OIP load's copies). */
  policies: PolicyReport[];
  /** The pool's managed queue. */
  queue: QueueReport;
}

const P = "switchyard_gateway_";

/**
 * GET /metrics: every pool's report as Prometheus metrics, each series labelled with its pool. Gauges
 * come from the registry's state at the time of the scrape; counters and histograms from its persisted
 * counters (pool-counters.ts). docs/metrics.md explains each one.
 */
export function renderPrometheus(reports: readonly PoolReport[]): string {
  const out = new Exposition();
  const each = <T>(pick: (report: PoolReport) => T[]) => reports.flatMap(pick);

  out.gauge(
    `${P}agents`,
    "Agents connected to the pool, by state (serving, or draining before shutdown).",
    each(({ pool, snapshot }) =>
      (["serving", "draining"] as const).map((state) => ({
        labels: { pool, state },
        value: snapshot.agents.filter((agent) => agent.draining === (state === "draining")).length,
      })),
    ),
  );
  out.gauge(
    `${P}replicas`,
    "Replicas connected to the pool, by device kind (cpu or cuda).",
    each(({ pool, snapshot }) => {
      const devices = snapshot.agents.flatMap((agent) =>
        agent.replicas.map((replica) => deviceKind(replica.device)),
      );
      return ["cpu", "cuda"].map((device) => ({
        labels: { pool, device },
        value: devices.filter((kind) => kind === device).length,
      }));
    }),
  );
  out.gauge(
    `${P}queue_depth`,
    "Requests waiting in the registry for a free replica slot.",
    each(({ pool, snapshot }) => [{ labels: { pool }, value: snapshot.queued }]),
  );
  out.gauge(
    `${P}in_flight`,
    "Requests sent to agents and not answered yet.",
    each(({ pool, snapshot }) => [
      {
        labels: { pool },
        value: snapshot.agents.reduce(
          (sum, agent) => sum + Object.values(agent.inFlight).reduce((a, b) => a + b, 0),
          0,
        ),
      },
    ]),
  );

  out.gauge(
    `${P}queue_async_waiting`,
    "Managed-queue requests (POST /v2/queue/...) waiting to start, by model.",
    each(({ pool, queue }) =>
      Object.entries(queue.waiting).map(([model, value]) => ({ labels: { pool, model }, value })),
    ),
  );
  out.gauge(
    `${P}queue_async_running`,
    "Managed-queue requests handed to the pool and not answered yet.",
    each(({ pool, queue }) => [{ labels: { pool }, value: queue.running }]),
  );
  out.counter(
    `${P}queue_async_events_total`,
    "What happened to managed-queue requests: submitted, started, deferred (back in the queue), rerun, and how they ended (completed, failed, cancelled, timed_out).",
    each(({ pool, queue }) =>
      Object.entries(queue.events).map(([event, value]) => ({ labels: { pool, event }, value })),
    ),
  );

  const replicas = each(({ pool, snapshot }) =>
    snapshot.agents.flatMap((agent) =>
      agent.replicas.map((replica) => ({
        labels: { pool, agent: agent.id, replica: replica.id, device: replica.device },
        replica,
        inFlight: agent.inFlight[replica.id] ?? 0,
      })),
    ),
  );
  out.gauge(
    `${P}replica_in_flight`,
    "Requests the registry has sent to this replica and not seen answered.",
    replicas.map(({ labels, inFlight }) => ({ labels, value: inFlight })),
  );
  out.gauge(
    `${P}replica_slots`,
    "Requests this replica takes at once (its --max-concurrency).",
    replicas.map(({ labels, replica }) => ({ labels, value: replica.maxConcurrency })),
  );
  out.gauge(
    `${P}replica_queued`,
    "Requests waiting inside the replica for a slot or a batch, as it last reported.",
    replicas.map(({ labels, replica }) => ({ labels, value: replica.queued })),
  );
  out.gauge(
    `${P}replica_models_loaded`,
    "Models loaded on this replica, as it last reported.",
    replicas.map(({ labels, replica }) => ({ labels, value: replica.loaded.length })),
  );
  out.gauge(
    `${P}replica_memory_used_bytes`,
    "Bytes of loaded models on this replica, as it last reported.",
    replicas.map(({ labels, replica }) => ({ labels, value: replica.memoryUsedBytes })),
  );
  out.gauge(
    `${P}replica_memory_budget_bytes`,
    "Bytes of models this replica may hold (its --max-model-memory).",
    replicas.map(({ labels, replica }) => ({ labels, value: replica.memoryBudgetBytes })),
  );
  out.gauge(
    `${P}model_replicas`,
    "Replicas holding the model version (state loaded) or loading it (state loading).",
    each(({ pool, snapshot }) => modelReplicas(pool, snapshot)),
  );
  out.gauge(
    `${P}model_pinned_replicas`,
    "Replicas holding a pinned copy of the model version now (its min_copies, or OIP load's copies, placed).",
    each(({ pool, snapshot }) => modelReplicas(pool, snapshot, "pinned")),
  );
  out.gauge(
    `${P}model_min_copies`,
    "Replicas the model's serving policy keeps it loaded on (min_copies: pinned copies), for models with a policy.",
    each(({ pool, policies }) =>
      policies.map((policy) => ({ labels: { pool, model: policy.model }, value: policy.minCopies })),
    ),
  );
  out.gauge(
    `${P}model_max_copies`,
    "Replicas that may hold the model at once (max_copies), for models with a cap.",
    each(({ pool, policies }) =>
      policies.flatMap((policy) =>
        policy.maxCopies === null ? [] : [{ labels: { pool, model: policy.model }, value: policy.maxCopies }],
      ),
    ),
  );

  out.counter(
    `${P}requests_total`,
    "Inference requests answered by the pool's registry, by model and HTTP status.",
    each(({ pool, counters }) =>
      Object.entries(counters.requests).map(([key, value]) => ({
        labels: { pool, ...requestLabels(key) },
        value,
      })),
    ),
  );
  const perModel = (name: string, help: string, pick: (counters: PoolCounters) => Record<string, number>) =>
    out.counter(
      name,
      help,
      each(({ pool, counters }) =>
        Object.entries(pick(counters)).map(([model, value]) => ({ labels: { pool, model }, value })),
      ),
    );
  perModel(
    `${P}cache_hits_total`,
    "Requests served by a replica that had the model loaded.",
    (c) => c.cacheHits,
  );
  perModel(`${P}cache_misses_total`, "Requests that waited for their model to load.", (c) => c.cacheMisses);
  perModel(
    `${P}model_loads_total`,
    "Model loads finished on replicas, as agents reported them.",
    (c) => c.loads,
  );
  perModel(`${P}model_load_failures_total`, "Model loads that failed on a replica.", (c) => c.loadFailures);
  perModel(
    `${P}model_evictions_total`,
    "Models unloaded from a replica: evicted for room, idle past --keep-alive, or unloaded on request.",
    (c) => c.unloads,
  );
  out.counter(
    `${P}retries_total`,
    "Requests sent again to another replica because the first one never started them.",
    each(({ pool, counters }) => [{ labels: { pool }, value: counters.retries }]),
  );
  out.counter(
    `${P}direct_runs_total`,
    "Requests an agent's relay took straight from the Worker without asking the registry first: hits on a replica holding the model with a slot free while nothing waited (docs/scaling.md, direct hits). The registry adopted each (adopt and release, off the client's path); each counts in requests_total too.",
    each(({ pool, counters }) => [{ labels: { pool }, value: counters.directRuns }]),
  );
  out.counter(
    `${P}shard_passes_total`,
    "Asks a registry shard passed on to the model's next shard, by reason: hit (it holds the model, not the hint), cold (it could load it), backlogged, awaited (its agents are coming back), not-served, no-agents. Zero in a pool of one shard.",
    each(({ pool, counters }) =>
      Object.entries(counters.passes).map(([reason, value]) => ({ labels: { pool, reason }, value })),
    ),
  );
  out.counter(
    `${P}registry_storage_writes_total`,
    "Writes by the pool's registry since it started, by kind: kv (storage puts and deletes), alarm (alarms set), attachment (agent records kept in their sockets).",
    each(({ pool, storageWrites }) =>
      (["kv", "alarm", "attachment"] as const).map((kind) => ({
        labels: { pool, kind },
        value: storageWrites[kind],
      })),
    ),
  );
  out.counter(
    `${P}agent_connections_total`,
    "Agents that joined the pool (reconnections included).",
    each(({ pool, counters }) => [{ labels: { pool }, value: counters.agentConnections }]),
  );

  const histogram = (name: string, help: string, pick: (counters: PoolCounters) => HistogramData) =>
    out.histogram(
      name,
      help,
      each(({ pool, counters }) => [histogramSample({ pool }, pick(counters))]),
    );
  histogram(
    `${P}queue_seconds`,
    "Time a request waited before it ran: in the registry's queue, then in the replica's.",
    (c) => c.queueSeconds,
  );
  histogram(
    `${P}load_seconds`,
    "Time a request waited for its model to load (cache misses only).",
    (c) => c.loadSeconds,
  );
  histogram(
    `${P}inference_seconds`,
    "Time of the run that computed a request's outputs.",
    (c) => c.inferenceSeconds,
  );
  histogram(
    `${P}request_duration_seconds`,
    "Time from a request's arrival at the pool's registry to its answer, failures included.",
    (c) => c.requestSeconds,
  );
  out.gauge(
    `${P}counters_start_time_seconds`,
    "When the pool's counters started counting (Unix time); they survive hibernation and restarts.",
    each(({ pool, counters }) => [{ labels: { pool }, value: counters.since / 1000 }]),
  );
  return out.toString();
}

function histogramSample(labels: Labels, data: HistogramData): HistogramSample {
  return { labels, bounds: LATENCY_BUCKETS_SECONDS, counts: data.counts, sum: data.sum, count: data.count };
}

const deviceKind = (device: string) => (device.startsWith("cuda") ? "cuda" : "cpu");

/** Replicas per model version: loaded and loading (labelled with the state), or holding a pinned copy. */
function modelReplicas(
  pool: string,
  snapshot: PoolSnapshot,
  which: "states" | "pinned" = "states",
): Array<{ labels: Labels; value: number }> {
  const counts = new Map<string, { labels: Labels; value: number }>();
  const add = (name: string, version: string, state?: "loaded" | "loading") => {
    const key = `${modelKey({ name, version })} ${state ?? ""}`;
    const known = counts.get(key);
    if (known !== undefined) known.value += 1;
    else
      counts.set(key, {
        labels: { pool, model: name, version, ...(state === undefined ? {} : { state }) },
        value: 1,
      });
  };
  for (const agent of snapshot.agents) {
    for (const replica of agent.replicas) {
      if (which === "pinned") {
        for (const model of replica.loaded) if (model.pinned) add(model.name, model.version);
        continue;
      }
      for (const model of replica.loaded) add(model.name, model.version, "loaded");
      for (const model of replica.loading) add(model.name, model.version, "loading");
    }
  }
  return [...counts.values()];
}
