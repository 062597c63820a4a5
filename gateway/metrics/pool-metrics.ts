import { replicaChanges } from "../../shared/metrics/replica-changes.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import { type AgentRecord, replicaAddress } from "../registry/agent-link.ts";
import {
  countModelEvent,
  countRequest,
  emptyCounters,
  type PoolCounters,
  PoolCountersSchema,
  type RequestRecord,
  recentSlots,
} from "./pool-counters.ts";

/** Storage key of the pool's counters in the Registry's SQLite-backed key-value storage. */
export const METRICS_STORAGE_KEY = "metrics:v1";
/** Counters are written this long after the first change that is not yet stored. */
export const FLUSH_DELAY_MS = 2_000;

export interface PoolMetricsOptions {
  kv: SyncKvStorage;
  now?: () => number;
  flushDelayMs?: number;
}

/**
 * The Registry's metrics: one call per event (a request answered, an agent's state changed, a retry),
 * counted where it happens, in memory.
 *
 * Hibernation and eviction: the counters live in memory, and a hibernating or evicted Durable Object loses
 * its memory. So they are also written to the object's storage, once, FLUSH_DELAY_MS after the first change
 * not yet stored (a pending timer keeps the object from hibernating until it has written), and read back
 * by the constructor: counters keep growing across hibernation, as Prometheus expects of a counter. An
 * eviction without warning (a deploy, a crash) loses at most the last FLUSH_DELAY_MS of counts. The
 * baselines that loads and evictions are diffed against are not stored: after a wake they start again from
 * the agents' records (kept in their sockets' attachments), which are the same states as before.
 */
export class PoolMetrics {
  readonly #kv: SyncKvStorage;
  readonly #now: () => number;
  readonly #flushDelayMs: number;
  readonly #counters: PoolCounters;
  /** The last state seen of each replica ("<agent>/<replica>"), to tell what changed. */
  readonly #replicas = new Map<string, ReplicaState>();
  #flushTimer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: PoolMetricsOptions) {
    this.#kv = options.kv;
    this.#now = options.now ?? Date.now;
    this.#flushDelayMs = options.flushDelayMs ?? FLUSH_DELAY_MS;
    const stored = PoolCountersSchema.safeParse(this.#kv.get(METRICS_STORAGE_KEY));
    // Unreadable counters (a future version, corruption) start afresh rather than take the pool down.
    this.#counters = stored.success ? stored.data : emptyCounters(this.#now());
  }

  /** One request's outcome, as its client got it (the registry learns it from the relay's release). */
  requestFinished(request: RequestRecord): void {
    countRequest(this.#counters, request, this.#now());
    this.#changed();
  }

  /** An agent's record changed (hello, state frame, a wake from hibernation). */
  agentChanged(record: AgentRecord): void {
    const listed = new Set<string>();
    let counted = false;
    for (const replica of record.replicas) {
      listed.add(replicaAddress(record.id, replica.id));
      counted = this.#compare(record.id, replica) || counted;
    }
    this.#forgetReplicas(`${record.id}/`, listed);
    if (counted) this.#changed();
  }

  /** One replica's state changed (a result's piggybacked state): only it is compared. */
  replicaChanged(agentId: string, replica: ReplicaState): void {
    if (this.#compare(agentId, replica)) this.#changed();
  }

  /** The agent left; its models are not counted as unloaded (they went with it). */
  agentGone(agentId: string): void {
    this.#forgetReplicas(`${agentId}/`, new Set());
  }

  agentConnected(): void {
    this.#counters.agentConnections += 1;
    this.#changed();
  }

  /** A request sent again elsewhere because its replica never started it. */
  retried(): void {
    this.#counters.retries += 1;
    this.#changed();
  }

  /** A registry shard passed an ask on to the model's next shard (`reason`: pool-calls.ts PASS_REASONS). */
  passed(reason: string): void {
    this.#counters.passes[reason] = (this.#counters.passes[reason] ?? 0) + 1;
    this.#changed();
  }

  /** An agent's relay took a request straight from the Worker, and this registry adopted it. */
  direct(): void {
    this.#counters.directRuns += 1;
    this.#changed();
  }

  /** A copy of the counters, the recent window trimmed to its length. */
  report(): PoolCounters {
    return { ...structuredClone(this.#counters), window: recentSlots(this.#counters, this.#now()) };
  }

  /** Writes the counters now (also what the flush timer does). */
  flush(): void {
    if (this.#flushTimer !== undefined) clearTimeout(this.#flushTimer);
    this.#flushTimer = undefined;
    this.#kv.put(METRICS_STORAGE_KEY, this.#counters);
  }

  #changed(): void {
    if (this.#flushTimer !== undefined) return;
    this.#flushTimer = setTimeout(() => this.flush(), this.#flushDelayMs);
  }

  /** Counts the loads, unloads and failed loads since the replica's last state; true when there were any. */
  #compare(agentId: string, replica: ReplicaState): boolean {
    const address = replicaAddress(agentId, replica.id);
    const changes = replicaChanges(this.#replicas.get(address), replica);
    this.#replicas.set(address, replica);
    for (const model of changes.loaded) countModelEvent(this.#counters, "loads", model.name);
    for (const model of changes.unloaded) countModelEvent(this.#counters, "unloads", model.name);
    for (const model of changes.failed) countModelEvent(this.#counters, "loadFailures", model.name);
    return changes.loaded.length + changes.unloaded.length + changes.failed.length > 0;
  }

  #forgetReplicas(prefix: string, keep: ReadonlySet<string>): void {
    for (const address of [...this.#replicas.keys()]) {
      if (address.startsWith(prefix) && !keep.has(address)) this.#replicas.delete(address);
    }
  }
}
