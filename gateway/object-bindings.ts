import type { QueueStatus } from "../shared/queue/queue-status.ts";
import type { ObjectEnv } from "./config.ts";
import type { Decision, DirectEntry, DirectSettled, RunReport } from "./pool-calls.ts";
import type {
  CancelLookup,
  Lookup,
  QueueReport,
  QueueSubmit,
  ResultLookup,
  SubmitAnswer,
} from "./queue/queue-calls.ts";

/**
 * How a pool's Durable Objects reach one another, and the one place that names them. A pool's registry
 * shards are `idFromName(pool)` (shard 0, so a pool of one shard keeps the object it always had) and
 * `idFromName("<pool>#<shard>")` ('#' is not allowed in pool names); an agent's relay is named by its data channel, a random id unique to one connection of
 * one agent (so a registry, which does not know its own name, can reach its agents' relays). The objects see each other
 * through these interfaces, not their classes, so that neither imports the other.
 */
export interface RegistryCalls extends Rpc.DurableObjectBranded {
  /** A run ended: the slot comes back; for a failed run, the decision whether to ask again. */
  release(report: RunReport): Decision;
  /** A run is still running at its agent: its slot stays held (see CLAIM_WINDOW_MS). */
  claim(ticket: string): void;
  /**
   * Direct hits the relay took (shared/routing/direct-hits.ts), batched: each one's slot taken (adopted), and
   * given back again for one that succeeded before the batch left; answers in the entries' order.
   */
  settleDirect(entries: DirectEntry[]): DirectSettled[];
  /** The agent's data socket broke or broke the protocol: the registry takes the agent out. */
  agentLost(channel: string, why: string): void;
}

/** A pool's managed queue (queue/request-queue.ts), as the Worker calls it. */
export interface QueueCalls extends Rpc.DurableObjectBranded {
  submit(submit: QueueSubmit): SubmitAnswer;
  status(id: string, owner: string): Lookup<{ queue: QueueStatus }>;
  result(id: string, owner: string): ResultLookup;
  cancel(id: string, owner: string): Promise<CancelLookup>;
  report(): QueueReport;
}

export interface RelayCalls extends Rpc.DurableObjectBranded {
  /** The registry took the agent out (it left, went silent, broke the protocol): its runs fail now. */
  agentGone(why: string): void;
}

/** What the registry sees: the configuration, the models, and the agents' relays. */
export interface RegistryEnv extends ObjectEnv {
  AGENT_RELAY: DurableObjectNamespace<RelayCalls>;
}

/** What an agent's relay sees: the configuration, and the registries it reports to. */
export interface RelayEnv extends ObjectEnv {
  REGISTRY: DurableObjectNamespace<RegistryCalls>;
}

/** Tells a registry which shard of its pool it is, on the agent sockets the Worker hands it. */
export const SHARD_HEADER = "x-switchyard-shard";

/** The shard numbers of a pool of `count` registry shards. */
export const shardNumbers = (count: number): number[] => Array.from({ length: count }, (_, shard) => shard);

export const registryName = (pool: string, shard: number) => (shard === 0 ? pool : `${pool}#${shard}`);
export const relayName = (channel: string) => `relay:${channel}`;

export function registryStub<T extends Rpc.DurableObjectBranded>(
  namespace: DurableObjectNamespace<T>,
  pool: string,
  shard: number,
): DurableObjectStub<T> {
  return namespace.get(namespace.idFromName(registryName(pool, shard)));
}

/** A pool's managed queue (queue/request-queue.ts): one object per pool, named by the pool. */
export function queueStub<T extends Rpc.DurableObjectBranded>(
  namespace: DurableObjectNamespace<T>,
  pool: string,
): DurableObjectStub<T> {
  return namespace.get(namespace.idFromName(`queue:${pool}`));
}

export function relayStub<T extends Rpc.DurableObjectBranded>(
  namespace: DurableObjectNamespace<T>,
  channel: string,
): DurableObjectStub<T> {
  return namespace.get(namespace.idFromName(relayName(channel)));
}
