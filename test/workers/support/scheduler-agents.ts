import type { SlotAsk } from "../../../gateway/pool-calls.ts";
import type { AgentLink } from "../../../gateway/registry/agent-link.ts";
import type { Scheduler } from "../../../gateway/registry/scheduler.ts";
import { newChannelId } from "../../../shared/protocol/data-channel.ts";
import { PROTOCOL_VERSION } from "../../../shared/protocol/frames.ts";
import type { ReplicaState } from "../../../shared/protocol/replica-state.ts";

/** A first ask for model "m", with a minute to go, that the scheduler may not pass on (one shard). */
export const ASK_M: SlotAsk = {
  model: "m",
  timeoutMs: 60_000,
  budgetMs: 60_000,
  attempts: 0,
  reruns: 0,
  pass: "never",
};

/**
 * An agent joining a Scheduler driven directly by a test (a real socket pair, the hello a real agent sends),
 * for the rules that need a clock of their own or many agents at once.
 */
export function joinScheduler(
  scheduler: Scheduler,
  name: string,
  replicas: ReplicaState[],
  channel = newChannelId(),
): AgentLink {
  const { 1: socket } = new WebSocketPair();
  socket.accept();
  return scheduler.register(socket, {
    type: "hello",
    protocol: PROTOCOL_VERSION,
    agent: { name, version: "test" },
    hints: [],
    replicas,
    signatures: [],
    repository: { kind: "gateway" },
    channel,
  });
}
