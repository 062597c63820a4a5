import type { ReplicaState } from "../../shared/protocol/replica-state.ts";

/**
 * One connected agent as the registry knows it. `record` is everything that must survive hibernation:
 * the registry writes it to the socket's attachment (or to storage when it is too big, see
 * agent-store.ts) at every change, and rebuilds the link from it when it wakes.
 */
export interface AgentRecord {
  /** Unique in the pool; replica addresses are "<id>/<replica id>". */
  id: string;
  name: string;
  version: string;
  hints: string[];
  draining: boolean;
  /** Epoch milliseconds. */
  connectedAt: number;
  replicas: ReplicaState[];
  /**
   * Where its models come from: the gateway's repository, or its own (whose listing the registry keeps in
   * storage, see agent-offers.ts: it is written once per connection, not with every state change).
   */
  models: "gateway" | "own";
  /** Its data channel: the name of the relay its requests go through (shared/protocol/data-channel.ts). */
  channel: string;
}

export interface AgentLink {
  socket: WebSocket;
  record: AgentRecord;
  /** Last frame from the agent (epoch ms); heartbeats answered while hibernating are read from the runtime. */
  lastSeen: number;
}

/** A replica's address in the pool (what the dispatcher routes to): "<agent id>/<replica id>". */
export const replicaAddress = (agentId: string, replicaId: string) => `${agentId}/${replicaId}`;

/** The agent and replica of an address; replica ids never contain "/" (the registry refuses them). */
export function splitReplicaAddress(address: string): { agentId: string; replicaId: string } {
  const slash = address.lastIndexOf("/");
  return { agentId: address.slice(0, slash), replicaId: address.slice(slash + 1) };
}

/**
 * An id for a new agent: its name made safe for headers and addresses, with a suffix when another
 * connected agent already has it (two hosts with one name still get routed to separately).
 */
export function uniqueAgentId(name: string, taken: (id: string) => boolean): string {
  const base = name.replace(/[^A-Za-z0-9_.:-]/g, "-").slice(0, 64) || "agent";
  if (!taken(base)) return base;
  for (let suffix = 2; ; suffix += 1) {
    const candidate = `${base}~${suffix}`;
    if (!taken(candidate)) return candidate;
  }
}
