import type { AgentLink } from "../../../gateway/registry/agent-link.ts";
import type { Scheduler } from "../../../gateway/registry/scheduler.ts";
import { newChannelId } from "../../../shared/protocol/data-channel.ts";
import { PROTOCOL_VERSION } from "../../../shared/protocol/frames.ts";
import type { ReplicaState } from "../../../shared/protocol/replica-state.ts";

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
