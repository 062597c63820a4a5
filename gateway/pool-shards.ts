import { shardOrder } from "../shared/routing/shard-order.ts";
import { gatewayConfig } from "./config.ts";
import type { Env } from "./env.ts";
import { mergeCounters, type PoolCounters } from "./metrics/pool-counters.ts";
import { queueStub, registryStub, shardNumbers } from "./object-bindings.ts";
import type { PolicyReport, PoolSnapshot, PoolState } from "./pool-calls.ts";
import type { QueueReport } from "./queue/queue-calls.ts";
import type { StorageWrites } from "./registry/storage-meter.ts";
import { leastPopulated } from "./shard-placement.ts";

/**
 * A pool's registry shards (REGISTRY_SHARDS, docs/scaling.md): how many, which one an agent joins, in which
 * order a model's asks visit them, and the pool's state as the sum of theirs. With one shard (the default)
 * every answer is that one registry's, as it was before shards.
 */
export function shardCount(env: Env): number {
  return gatewayConfig(env).REGISTRY_SHARDS;
}

export function registryOf(env: Env, pool: string, shard: number) {
  return registryStub(env.REGISTRY, pool, shard);
}

/** Every shard's registry, shard 0 first. */
export function everyShard(env: Env, pool: string) {
  return shardNumbers(shardCount(env)).map((shard) => registryOf(env, pool, shard));
}

/** The shards a model's asks visit, its home first (shared/routing/shard-order.ts). */
export function askOrder(env: Env, model: string): number[] {
  return shardOrder(model, shardCount(env));
}

/** The shard a joining agent's control socket goes to (shard-placement.ts). */
export async function placeAgent(env: Env, pool: string, name: string | undefined): Promise<number> {
  if (shardCount(env) === 1) return 0;
  const populations = await Promise.all(everyShard(env, pool).map((registry) => registry.population(name)));
  return leastPopulated(populations, Math.random);
}

/** The pool's agents and queue, over its shards. */
export async function poolSnapshot(env: Env, pool: string): Promise<PoolState> {
  return mergeSnapshots(await Promise.all(everyShard(env, pool).map((registry) => registry.snapshot())));
}

export interface ShardsReport {
  snapshot: PoolState;
  counters: PoolCounters;
  storageWrites: StorageWrites;
  /** Models with a serving policy: the pin's copies (in the one shard holding it) and the cap (in each). */
  policies: PolicyReport[];
  /** The pool's managed queue (queue/request-queue.ts). */
  queue: QueueReport;
}

/** The pool's state and counters over its shards, for /metrics and the dashboard. */
export async function poolReport(env: Env, pool: string): Promise<ShardsReport> {
  const [reports, queue] = await Promise.all([
    Promise.all(everyShard(env, pool).map((registry) => registry.report())),
    queueStub(env.REQUEST_QUEUE, pool).report() as Promise<QueueReport>,
  ]);
  return {
    queue,
    snapshot: mergeSnapshots(reports.map((report) => report.snapshot)),
    counters: mergeCounters(reports.map((report) => report.counters)),
    storageWrites: {
      kv: sum(reports, (report) => report.storageWrites.kv),
      alarm: sum(reports, (report) => report.storageWrites.alarm),
      attachment: sum(reports, (report) => report.storageWrites.attachment),
    },
    policies: mergePolicies(reports.flatMap((report) => report.policies)),
  };
}

function mergePolicies(policies: readonly PolicyReport[]): PolicyReport[] {
  const merged = new Map<string, PolicyReport>();
  for (const policy of policies) {
    const known = merged.get(policy.model);
    if (known === undefined) merged.set(policy.model, { ...policy });
    else {
      known.minCopies += policy.minCopies;
      known.maxCopies ??= policy.maxCopies;
    }
  }
  return [...merged.values()].sort((a, b) => a.model.localeCompare(b.model));
}

function mergeSnapshots(snapshots: readonly PoolSnapshot[]): PoolState {
  return {
    shards: snapshots.length,
    agents: snapshots.flatMap((snapshot, shard) => snapshot.agents.map((agent) => ({ ...agent, shard }))),
    queued: sum(snapshots, (snapshot) => snapshot.queued),
  };
}

function sum<T>(items: readonly T[], of: (item: T) => number): number {
  return items.reduce((total, item) => total + of(item), 0);
}
