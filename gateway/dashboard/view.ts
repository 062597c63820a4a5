import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import { emptyHistogram, mergeInto, quantile } from "../metrics/histogram.ts";
import { type PoolCounters, recentSlots, SLOT_MS, WINDOW_SLOTS } from "../metrics/pool-counters.ts";
import type { PolicyReport, PoolState } from "../pool-calls.ts";
import type { QueueReport } from "../queue/queue-calls.ts";

/**
 * What the dashboard page shows, computed on the Worker from one registry report: the pool now (agents,
 * replicas, models held and loading, requests in flight and queued) and its recent traffic (requests,
 * hit rate and latency percentiles per 10-second slot over 15 minutes, and over the last 5 minutes).
 */
export interface DashboardView {
  pool: string;
  /** Registry shards the pool's decisions are spread over (REGISTRY_SHARDS). */
  shards: number;
  /** Epoch ms of this view. */
  at: number;
  queued: number;
  inFlight: number;
  agents: DashboardAgent[];
  /** Models with a serving policy, and how many replicas hold each now. */
  policies: DashboardPolicy[];
  /** The managed queue: requests waiting per model (most first), running, and its counters. */
  asyncQueue: {
    waiting: Array<{ model: string; requests: number }>;
    running: number;
    events: QueueReport["events"];
  };
  recent: RecentSummary;
  slotSeconds: number;
  series: SeriesPoint[];
  countersSince: number;
}

export interface DashboardAgent {
  id: string;
  name: string;
  version: string;
  /** The registry shard it joined. */
  shard: number;
  draining: boolean;
  connectedAt: number;
  hints: string[];
  replicas: Array<
    Pick<
      ReplicaState,
      | "id"
      | "device"
      | "maxConcurrency"
      | "queued"
      | "memoryUsedBytes"
      | "memoryBudgetBytes"
      | "loaded"
      | "loading"
      | "failed"
    > & { inFlight: number }
  >;
}

export interface DashboardPolicy {
  model: string;
  /** Pinned copies (min_copies); 0: none. */
  minCopies: number;
  /** null: no cap. */
  maxCopies: number | null;
  /** Replicas holding it loaded now. */
  copies: number;
}

export interface RecentSummary {
  minutes: number;
  requests: number;
  errors: number;
  hits: number;
  misses: number;
  /** hits / (hits + misses); null before any request was served. */
  hitRate: number | null;
  ratePerSecond: number;
  p50Ms: number | null;
  p99Ms: number | null;
}

export interface SeriesPoint {
  /** Epoch ms where the slot starts. */
  t: number;
  /** Per second in the slot (the current slot: over its elapsed part): all answers, hits, misses, 5xx. */
  rate: number;
  hits: number;
  misses: number;
  errors: number;
  p50Ms: number | null;
  p99Ms: number | null;
}

export const SUMMARY_MINUTES = 5;

export function dashboardView(
  pool: string,
  report: {
    snapshot: PoolState;
    counters: PoolCounters;
    policies: readonly PolicyReport[];
    queue: QueueReport;
  },
  now: number,
): DashboardView {
  const { snapshot, counters } = report;
  const holding = (model: string) =>
    snapshot.agents
      .flatMap((agent) => agent.replicas)
      .filter((replica) => replica.loaded.some((loaded) => loaded.name === model)).length;
  const policies = report.policies.map((policy) => ({ ...policy, copies: holding(policy.model) }));
  const agents: DashboardAgent[] = snapshot.agents.map((agent) => ({
    id: agent.id,
    name: agent.name,
    version: agent.version,
    shard: agent.shard,
    draining: agent.draining,
    connectedAt: agent.connectedAt,
    hints: agent.hints.slice(0, 20),
    replicas: agent.replicas.map((replica) => ({
      id: replica.id,
      device: replica.device,
      maxConcurrency: replica.maxConcurrency,
      // The registry's count (what it sent and awaits), which is current; the agent's own is as last reported.
      inFlight: agent.inFlight[replica.id] ?? replica.inFlight,
      queued: replica.queued,
      memoryUsedBytes: replica.memoryUsedBytes,
      memoryBudgetBytes: replica.memoryBudgetBytes,
      loaded: replica.loaded,
      loading: replica.loading,
      failed: replica.failed,
    })),
  }));
  const inFlight = agents.reduce(
    (sum, agent) => sum + agent.replicas.reduce((inner, replica) => inner + replica.inFlight, 0),
    0,
  );
  const slots = recentSlots(counters, now);
  return {
    pool,
    shards: snapshot.shards,
    at: now,
    queued: snapshot.queued,
    inFlight,
    agents,
    policies,
    asyncQueue: {
      waiting: Object.entries(report.queue.waiting)
        .map(([model, requests]) => ({ model, requests }))
        .sort((a, b) => b.requests - a.requests || a.model.localeCompare(b.model))
        .slice(0, 50),
      running: report.queue.running,
      events: report.queue.events,
    },
    recent: summarize(slots, now, counters.since),
    slotSeconds: SLOT_MS / 1000,
    series: series(slots, now),
    countersSince: counters.since,
  };
}

const currentSlotStart = (now: number) => Math.floor(now / SLOT_MS) * SLOT_MS;
const toMs = (seconds: number | undefined) => (seconds === undefined ? null : round(seconds * 1000));
const round = (value: number) => Math.round(value * 100) / 100;

function summarize(slots: ReturnType<typeof recentSlots>, now: number, since: number): RecentSummary {
  const from = currentSlotStart(now) - (SUMMARY_MINUTES * 60_000 - SLOT_MS);
  const within = slots.filter((slot) => slot.start >= from);
  const latency = emptyHistogram();
  let requests = 0;
  let errors = 0;
  let hits = 0;
  let misses = 0;
  for (const slot of within) {
    requests += slot.requests;
    errors += slot.errors;
    hits += slot.hits;
    misses += slot.misses;
    mergeInto(latency, slot.latency);
  }
  // A pool younger than the window is averaged over its own life, not over minutes it did not exist.
  const elapsedSeconds = Math.max(1, (now - Math.max(from, since)) / 1000);
  return {
    minutes: SUMMARY_MINUTES,
    requests,
    errors,
    hits,
    misses,
    hitRate: hits + misses === 0 ? null : hits / (hits + misses),
    ratePerSecond: round(requests / elapsedSeconds),
    p50Ms: toMs(quantile(latency, 0.5)),
    p99Ms: toMs(quantile(latency, 0.99)),
  };
}

/** One point per slot of the window, empty slots included, so the charts' time axis has no gaps. */
function series(slots: ReturnType<typeof recentSlots>, now: number): SeriesPoint[] {
  const byStart = new Map(slots.map((slot) => [slot.start, slot]));
  const current = currentSlotStart(now);
  const points: SeriesPoint[] = [];
  for (let index = WINDOW_SLOTS - 1; index >= 0; index--) {
    const t = current - index * SLOT_MS;
    const slot = byStart.get(t);
    const seconds = t === current ? Math.max(1, (now - t) / 1000) : SLOT_MS / 1000;
    points.push({
      t,
      rate: round((slot?.requests ?? 0) / seconds),
      hits: round((slot?.hits ?? 0) / seconds),
      misses: round((slot?.misses ?? 0) / seconds),
      errors: round((slot?.errors ?? 0) / seconds),
      p50Ms: slot === undefined ? null : toMs(quantile(slot.latency, 0.5)),
      p99Ms: slot === undefined ? null : toMs(quantile(slot.latency, 0.99)),
    });
  }
  return points;
}
