import type { Hello } from "../../shared/protocol/frames.ts";
import { silenceLimitMs } from "../../shared/protocol/heartbeat.ts";
import type { AgentSnapshot } from "../pool-calls.ts";
import { type AgentLink, type AgentRecord, replicaAddress, uniqueAgentId } from "./agent-link.ts";
import { ProtocolViolation } from "./protocol-violation.ts";

export interface AgentRosterOptions {
  heartbeatMs: number;
  now: () => number;
  /** When the runtime last answered this socket's "ping" (possibly while the object hibernated). */
  lastHeartbeat?: ((socket: WebSocket) => number | undefined) | undefined;
}

/**
 * The pool's connected agents, by id and by socket, and whether each is still alive. Membership is all it
 * knows: what an agent's replicas are doing is the dispatcher's, and its requests are the ledger's.
 */
export class AgentRoster {
  readonly #options: AgentRosterOptions;
  readonly #agents = new Map<string, AgentLink>();
  readonly #bySocket = new Map<WebSocket, AgentLink>();
  /** nextSilenceAt()'s last answer; undefined: to be computed. */
  #nextSilenceAt: number | undefined;

  constructor(options: AgentRosterOptions) {
    this.#options = options;
  }

  /** The record of an agent that says hello on `socket`, under an id no connected agent has. */
  recordOf(socket: WebSocket, hello: Hello): AgentRecord {
    if (this.#bySocket.has(socket)) throw new ProtocolViolation("second hello on one connection");
    // A channel names one relay and carries one connection: another agent's would be a hijack.
    for (const link of this.#agents.values()) {
      if (link.record.channel === hello.channel)
        throw new ProtocolViolation("data channel in use by another agent");
    }
    return {
      id: uniqueAgentId(hello.agent.name, (id) => this.#agents.has(id)),
      name: hello.agent.name,
      version: hello.agent.version,
      hints: hello.hints,
      draining: false,
      connectedAt: this.#options.now(),
      replicas: hello.replicas,
      models: hello.repository.kind,
      channel: hello.channel,
    };
  }

  add(socket: WebSocket, record: AgentRecord): AgentLink {
    const link: AgentLink = { socket, record, lastSeen: this.#options.now() };
    // A newcomer falls silent after everyone known: the kept moment stays right (see nextSilenceAt).
    if (this.#agents.size === 0) this.#nextSilenceAt = undefined;
    this.#agents.set(record.id, link);
    this.#bySocket.set(socket, link);
    return link;
  }

  /** Takes the agent out; false when it was already out (or replaced by a newer link on its socket). */
  remove(link: AgentLink): boolean {
    if (!this.isCurrent(link)) return false;
    this.#bySocket.delete(link.socket);
    this.#agents.delete(link.record.id);
    return true;
  }

  isCurrent(link: AgentLink): boolean {
    return this.#bySocket.get(link.socket) === link;
  }

  linkOf(socket: WebSocket): AgentLink | undefined {
    return this.#bySocket.get(socket);
  }

  get(agentId: string): AgentLink | undefined {
    return this.#agents.get(agentId);
  }

  /** Every connected agent, draining ones too. */
  links(): AgentLink[] {
    return [...this.#agents.values()];
  }

  /** Connected agents that are not draining. */
  get serving(): number {
    let serving = 0;
    for (const link of this.#agents.values()) if (!link.record.draining) serving += 1;
    return serving;
  }

  /** Any frame proves the agent alive. */
  touch(link: AgentLink): void {
    link.lastSeen = this.#options.now();
  }

  /**
   * Agents whose heartbeats stopped (a host that lost its network leaves a half-open connection that no
   * close event reports).
   */
  silent(): AgentLink[] {
    const now = this.#options.now();
    // Asked before every request: while the first silence lies ahead, nobody is silent, and no agent is
    // visited (nextSilenceAt is one past the last moment an agent still counts as alive).
    const first = this.nextSilenceAt();
    if (first === undefined || now < first) return [];
    const limit = silenceLimitMs(this.#options.heartbeatMs);
    return this.links().filter((link) => now - this.#lastHeard(link) > limit);
  }

  /**
   * When the first connected agent would count as silent, if nothing is heard from it before. Asked on every
   * request (the registry's alarm), so the answer is kept while it lies ahead: signs of life only move the
   * true moment later, so the kept one is early at worst, and an early alarm finds nothing and asks again.
   */
  nextSilenceAt(): number | undefined {
    const kept = this.#nextSilenceAt;
    if (kept !== undefined && kept > this.#options.now()) return kept;
    const limit = silenceLimitMs(this.#options.heartbeatMs);
    let first: number | undefined;
    for (const link of this.#agents.values()) {
      const at = this.#lastHeard(link) + limit + 1;
      if (first === undefined || at < first) first = at;
    }
    this.#nextSilenceAt = first;
    return first;
  }

  /**
   * What the pool looks like, with the requests in flight at each replica (by its address). The data channel
   * is left out: it names the agent's relay, and the snapshot goes to dashboards.
   */
  snapshot(inFlight: (address: string) => number): AgentSnapshot[] {
    return this.links().map(({ record: { channel: _channel, ...record } }) => ({
      ...record,
      inFlight: Object.fromEntries(
        record.replicas.map((replica) => [replica.id, inFlight(replicaAddress(record.id, replica.id))]),
      ),
    }));
  }

  /** The last sign of life: a frame, or a "ping" the runtime answered (possibly while the object slept). */
  #lastHeard(link: AgentLink): number {
    return Math.max(link.lastSeen, this.#options.lastHeartbeat?.(link.socket) ?? 0);
  }
}
