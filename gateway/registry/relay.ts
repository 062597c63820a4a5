import { SwitchyardError } from "../../shared/errors.ts";
import {
  type ErrorFrame,
  encodeBinaryFrame,
  type Hello,
  type InferHeader,
  type ResultHeader,
} from "../../shared/protocol/frames.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import { type Dispatch, Dispatcher } from "../../shared/routing/dispatcher.ts";
import type { RouteRequest, RoutingPolicy } from "../../shared/routing/types.ts";
import { type AgentLink, type AgentRecord, replicaAddress, uniqueAgentId } from "./agent-link.ts";
import { ProtocolViolation } from "./protocol-violation.ts";
import type { AgentSnapshot, InferCall, InferFailure, InferOutcome, PoolSnapshot } from "./relay-types.ts";

/**
 * The registry's working memory: which agents are connected, what their replicas hold, and every request
 * between its arrival and its answer. Routing and the queue are the shared Dispatcher's (around the
 * configured policy); this class does the I/O the dispatcher decides on: it sends infer frames, matches
 * result and error frames to waiting callers, and makes sure each request ends in exactly one outcome:
 * the agent's answer, a retry elsewhere (the agent said it never started), or a clear error (deadline,
 * disconnect, refusal). Nothing here survives hibernation, and nothing needs to: a request in flight
 * keeps the Durable Object awake, and agents' records are re-added from their sockets on wake.
 */
export interface RelayOptions {
  policy: RoutingPolicy;
  maxQueue: number;
  heartbeatMs: number;
  now?: () => number;
  /** A change to an agent's record, to be persisted (socket attachment). */
  onAgentChanged: (link: AgentLink) => void;
  /** An agent is gone; its socket is being or has been closed. */
  onAgentGone: (link: AgentLink) => void;
  /** When the runtime last answered this socket's "ping" (possibly while the object hibernated). */
  lastHeartbeat?: (socket: WebSocket) => number | undefined;
  log?: (event: string, fields: Record<string, unknown>) => void;
}

interface Sent {
  agentId: string;
  replicaId: string;
  address: string;
  sentAt: number;
}

interface PendingRequest {
  id: string;
  call: InferCall;
  route: RouteRequest;
  arrivedAt: number;
  deadline: number;
  attempts: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  settle: (outcome: InferOutcome) => void;
  sent?: Sent;
}

/** A request whose client got its answer (504) while the agent still works on it: the slot stays taken. */
interface Abandoned {
  sent: Sent;
  timer: ReturnType<typeof setTimeout>;
}

/** A request the agent never started may be tried this many times in all. */
const MAX_ATTEMPTS = 3;
/** After a deadline, how long the agent gets to answer the cancelled request before its slot is freed anyway. */
const ABANDONED_GRACE_MS = 30_000;
/** Missed heartbeats before an agent is taken for dead. */
export const MISSED_HEARTBEATS = 3;

export class Relay {
  readonly #options: RelayOptions;
  readonly #now: () => number;
  readonly #dispatcher: Dispatcher<PendingRequest>;
  readonly #agents = new Map<string, AgentLink>();
  readonly #bySocket = new Map<WebSocket, AgentLink>();
  readonly #pending = new Map<string, PendingRequest>();
  readonly #abandoned = new Map<string, Abandoned>();
  /**
   * Request ids are "<incarnation>-<counter>". A result carrying another incarnation's id answers a request
   * of this object's previous life (before an eviction), which nobody waits for any more: harmless, ignored.
   * Any other unknown id is a protocol violation.
   */
  readonly #incarnation = randomHex(4);
  #counter = 0;

  constructor(options: RelayOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#dispatcher = new Dispatcher<PendingRequest>({
      policy: options.policy,
      maxQueue: options.maxQueue,
      now: this.#now,
    });
  }

  // ---- agents ----

  /** A hello on a fresh socket: the agent joins the pool. */
  register(socket: WebSocket, hello: Hello): AgentLink {
    if (this.#bySocket.has(socket)) throw new ProtocolViolation("second hello on one connection");
    assertUniqueReplicaIds(hello.replicas);
    const record: AgentRecord = {
      id: uniqueAgentId(hello.agent.name, (id) => this.#agents.has(id)),
      name: hello.agent.name,
      version: hello.agent.version,
      hints: hello.hints,
      draining: false,
      connectedAt: this.#now(),
      replicas: hello.replicas,
    };
    const link = this.#add(socket, record);
    this.#log("agent-connected", { agent: record.id, replicas: record.replicas.length });
    return link;
  }

  /** An agent known from a socket attachment, after the object woke from hibernation or was evicted. */
  restore(socket: WebSocket, record: AgentRecord): AgentLink {
    return this.#add(socket, record);
  }

  linkOf(socket: WebSocket): AgentLink | undefined {
    return this.#bySocket.get(socket);
  }

  /** A state frame: the agent's replicas as they are now (replicas it no longer lists are gone). */
  updateState(link: AgentLink, replicas: ReplicaState[]): void {
    assertUniqueReplicaIds(replicas);
    const listed = new Set(replicas.map((replica) => replica.id));
    for (const replica of link.record.replicas) {
      if (!listed.has(replica.id)) this.#dispatcher.removeReplica(replicaAddress(link.record.id, replica.id));
    }
    link.record.replicas = replicas;
    for (const replica of replicas) this.#upsert(link, replica);
    this.#options.onAgentChanged(link);
  }

  /** The agent is shutting down: it finishes what it has and takes nothing new. */
  drain(link: AgentLink): void {
    link.record.draining = true;
    for (const replica of link.record.replicas) {
      this.#dispatcher.setDraining(replicaAddress(link.record.id, replica.id), true);
    }
    this.#options.onAgentChanged(link);
    this.#log("agent-draining", { agent: link.record.id });
  }

  /** Any frame proves the agent alive. */
  touch(link: AgentLink): void {
    link.lastSeen = this.#now();
  }

  /**
   * The agent is gone (closed, errored, broke the protocol, went silent). Requests it was working on fail
   * with a clear 503: a request already sent may have run, so it is not silently run again. Requests still
   * in the queue stay there for the other replicas, or for this agent when it reconnects in time.
   */
  disconnect(link: AgentLink, why: string): void {
    if (this.#bySocket.get(link.socket) !== link) return;
    this.#bySocket.delete(link.socket);
    this.#agents.delete(link.record.id);
    for (const replica of link.record.replicas) {
      this.#dispatcher.removeReplica(replicaAddress(link.record.id, replica.id));
    }
    for (const pending of [...this.#pending.values()]) {
      if (pending.sent?.agentId !== link.record.id) continue;
      this.#finish(pending, {
        ok: false,
        status: 503,
        code: "unavailable",
        message: `the agent serving this request disconnected (${why}); it may or may not have run`,
        replica: pending.sent.address,
        retryAfterSeconds: 1,
      });
    }
    for (const [id, abandoned] of this.#abandoned) {
      if (abandoned.sent.agentId !== link.record.id) continue;
      clearTimeout(abandoned.timer);
      this.#abandoned.delete(id);
    }
    this.#options.onAgentGone(link);
    this.#log("agent-disconnected", { agent: link.record.id, why });
  }

  /**
   * Agents whose heartbeats stopped (a host that lost its network leaves a half-open connection that no
   * close event reports). Checked before routing, so requests are not sent into the void.
   */
  staleAgents(): AgentLink[] {
    const now = this.#now();
    const limit = MISSED_HEARTBEATS * this.#options.heartbeatMs;
    return [...this.#agents.values()].filter((link) => {
      const heartbeat = this.#options.lastHeartbeat?.(link.socket) ?? 0;
      return now - Math.max(link.lastSeen, heartbeat) > limit;
    });
  }

  // ---- frames from agents ----

  onResult(link: AgentLink, header: ResultHeader, body: Uint8Array): void {
    const owner = this.#claim(link, header.id, header.replica);
    if (owner === undefined) return;
    if (header.state !== undefined) this.#applyState(link, header.state);
    if (owner.kind === "pending") {
      const { pending, sent } = owner;
      this.#finish(pending, {
        ok: true,
        body,
        contentType: header.contentType,
        ...(header.headerLength === undefined ? {} : { headerLength: header.headerLength }),
        replica: sent.address,
        cache: header.cache,
        timings: {
          gatewayQueueMs: sent.sentAt - pending.arrivedAt,
          roundTripMs: this.#now() - sent.sentAt,
          ...header.timings,
        },
      });
    }
    this.#release(owner.sent.address);
  }

  onError(link: AgentLink, frame: ErrorFrame): void {
    const owner = this.#claim(link, frame.id, frame.replica);
    if (owner === undefined) return;
    if (frame.state !== undefined) this.#applyState(link, frame.state);
    if (owner.kind === "abandoned") {
      this.#release(owner.sent.address);
      return;
    }
    const { pending, sent } = owner;
    const retry = !frame.started && pending.attempts < MAX_ATTEMPTS && pending.deadline > this.#now();
    if (!retry) {
      this.#finish(pending, {
        ok: false,
        status: frame.status,
        message: frame.message,
        replica: sent.address,
      });
      this.#release(sent.address);
      return;
    }
    // Never started there: free the slot, then route it again (the fresh state steers the policy away
    // from a replica whose load just failed).
    delete pending.sent;
    this.#log("retry", { id: pending.id, from: sent.address, status: frame.status });
    this.#release(sent.address);
    this.#submit(pending);
  }

  // ---- requests ----

  infer(call: InferCall): Promise<InferOutcome> {
    const now = this.#now();
    this.#counter += 1;
    const id = `${this.#incarnation}-${this.#counter.toString(36)}`;
    return new Promise<InferOutcome>((resolve) => {
      const pending: PendingRequest = {
        id,
        call,
        route: {
          model: call.model,
          ...(call.version === undefined ? {} : { version: call.version }),
          ...(call.hint === undefined ? {} : { hint: call.hint }),
        },
        arrivedAt: now,
        deadline: now + call.timeoutMs,
        attempts: 0,
        timer: undefined,
        settle: resolve,
      };
      this.#pending.set(id, pending);
      pending.timer = setTimeout(() => this.#onDeadline(pending), call.timeoutMs);
      this.#submit(pending);
    });
  }

  snapshot(): PoolSnapshot {
    const inFlight = new Map(this.#dispatcher.replicas().map((view) => [view.address, view.inFlight]));
    const agents: AgentSnapshot[] = [...this.#agents.values()].map(({ record }) => ({
      ...record,
      inFlight: Object.fromEntries(
        record.replicas.map((replica) => [
          replica.id,
          inFlight.get(replicaAddress(record.id, replica.id)) ?? 0,
        ]),
      ),
    }));
    return { agents, queued: this.#dispatcher.queueLength };
  }

  // ---- internals ----

  #add(socket: WebSocket, record: AgentRecord): AgentLink {
    const link: AgentLink = { socket, record, lastSeen: this.#now() };
    this.#agents.set(record.id, link);
    this.#bySocket.set(socket, link);
    for (const replica of record.replicas) this.#upsert(link, replica);
    this.#options.onAgentChanged(link);
    return link;
  }

  #upsert(link: AgentLink, replica: ReplicaState): void {
    const dispatches = this.#dispatcher.upsertReplica(replicaAddress(link.record.id, replica.id), replica, {
      hints: link.record.hints,
      draining: link.record.draining,
    });
    this.#sendAll(dispatches);
  }

  /** A replica's fresh state from a result or error frame. */
  #applyState(link: AgentLink, state: ReplicaState): void {
    const index = link.record.replicas.findIndex((replica) => replica.id === state.id);
    if (index < 0) link.record.replicas.push(state);
    else link.record.replicas[index] = state;
    this.#upsert(link, state);
    this.#options.onAgentChanged(link);
  }

  /**
   * Which request a result or error frame answers, checked against who holds it. An answer for a request
   * another agent holds, or for an id this registry never issued, is a protocol violation.
   */
  #claim(
    link: AgentLink,
    id: string,
    replicaId: string,
  ):
    | { kind: "pending"; pending: PendingRequest; sent: Sent }
    | { kind: "abandoned"; sent: Sent }
    | undefined {
    const pending = this.#pending.get(id);
    const abandoned = this.#abandoned.get(id);
    const sent = pending?.sent ?? abandoned?.sent;
    if (sent === undefined) {
      if (isRequestId(id) && !id.startsWith(`${this.#incarnation}-`)) {
        this.#log("stale-answer", { agent: link.record.id, id });
        return undefined;
      }
      throw new ProtocolViolation(`answer for unknown request id ${JSON.stringify(id.slice(0, 40))}`);
    }
    if (sent.agentId !== link.record.id) {
      throw new ProtocolViolation(`answer for request ${id}, which another agent holds`);
    }
    if (sent.replicaId !== replicaId) {
      throw new ProtocolViolation(
        `answer for request ${id} from replica ${replicaId}; it was sent to ${sent.replicaId}`,
      );
    }
    if (pending !== undefined) return { kind: "pending", pending, sent };
    if (abandoned !== undefined) {
      clearTimeout(abandoned.timer);
      this.#abandoned.delete(id);
    }
    return { kind: "abandoned", sent };
  }

  #submit(pending: PendingRequest): void {
    pending.attempts += 1;
    let routed: ReturnType<Dispatcher<PendingRequest>["submit"]>;
    try {
      routed = this.#dispatcher.submit(pending.route, pending, pending.deadline);
    } catch (error) {
      this.#finish(pending, failureOf(error));
      return;
    }
    if ("address" in routed) this.#sendAll([routed]);
  }

  #release(address: string): void {
    this.#sendAll(this.#dispatcher.release(address));
  }

  /** Sends what the dispatcher decided; a send that fails frees its slot and may dispatch more. */
  #sendAll(dispatches: Dispatch<PendingRequest>[]): void {
    const work = [...dispatches];
    for (let dispatch = work.shift(); dispatch !== undefined; dispatch = work.shift()) {
      const failed = this.#send(dispatch);
      if (failed !== undefined) work.push(...this.#dispatcher.release(dispatch.address));
    }
  }

  /** Returns the address whose slot must be given back when nothing could be sent. */
  #send(dispatch: Dispatch<PendingRequest>): string | undefined {
    const pending = dispatch.payload;
    const slash = dispatch.address.lastIndexOf("/");
    const agentId = dispatch.address.slice(0, slash);
    const replicaId = dispatch.address.slice(slash + 1);
    const link = this.#agents.get(agentId);
    if (this.#pending.get(pending.id) !== pending) return dispatch.address;
    if (link === undefined) {
      this.#submit(pending);
      return dispatch.address;
    }
    const now = this.#now();
    const header: InferHeader = {
      type: "infer",
      id: pending.id,
      replica: replicaId,
      model: pending.call.model,
      ...(pending.call.version === undefined ? {} : { version: pending.call.version }),
      ...(pending.call.hint === undefined ? {} : { hint: pending.call.hint }),
      timeoutMs: Math.max(1, pending.deadline - now),
      ...(pending.call.headerLength === undefined ? {} : { headerLength: pending.call.headerLength }),
    };
    let frame: Uint8Array;
    try {
      frame = encodeBinaryFrame(header, pending.call.body);
    } catch (error) {
      this.#finish(pending, failureOf(error));
      return dispatch.address;
    }
    try {
      link.socket.send(frame);
    } catch {
      // The socket closed under us and its close event has not arrived yet: the agent is gone, and this
      // request never reached it, so it can go elsewhere.
      this.disconnect(link, "its connection closed");
      this.#submit(pending);
      return dispatch.address;
    }
    pending.sent = { agentId, replicaId, address: dispatch.address, sentAt: now };
    return undefined;
  }

  #onDeadline(pending: PendingRequest): void {
    pending.timer = undefined;
    if (this.#pending.get(pending.id) !== pending) return;
    const waitedMs = this.#now() - pending.arrivedAt;
    const sent = pending.sent;
    if (sent === undefined) {
      this.#dispatcher.cancel((queued) => queued === pending);
      this.#finish(pending, {
        ok: false,
        status: 504,
        code: "deadline_exceeded",
        message: `no replica for '${pending.call.model}' became free within the request's deadline of ${pending.call.timeoutMs} ms`,
      });
      return;
    }
    // The agent is told to stop; its slot stays taken until it answers (or the grace runs out), since the
    // work may still be running there.
    this.#finish(pending, {
      ok: false,
      status: 504,
      code: "deadline_exceeded",
      message: `'${pending.call.model}' did not answer within the request's deadline of ${pending.call.timeoutMs} ms (waited ${waitedMs} ms)`,
      replica: sent.address,
    });
    const link = this.#agents.get(sent.agentId);
    if (link === undefined) return;
    try {
      link.socket.send(JSON.stringify({ type: "cancel", id: pending.id }));
    } catch {
      // Its close event will follow.
    }
    this.#abandoned.set(pending.id, {
      sent,
      timer: setTimeout(() => {
        this.#abandoned.delete(pending.id);
        this.#release(sent.address);
      }, ABANDONED_GRACE_MS),
    });
  }

  #finish(pending: PendingRequest, outcome: InferOutcome): void {
    if (this.#pending.get(pending.id) !== pending) return;
    this.#pending.delete(pending.id);
    if (pending.timer !== undefined) clearTimeout(pending.timer);
    pending.settle(outcome);
  }

  #log(event: string, fields: Record<string, unknown>): void {
    this.#options.log?.(event, fields);
  }
}

function failureOf(error: unknown): InferFailure {
  const failure = SwitchyardError.from(error);
  return {
    ok: false,
    status: failure.status,
    code: failure.code,
    message: failure.message,
    ...(failure.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: failure.retryAfterSeconds }),
  };
}

function assertUniqueReplicaIds(replicas: readonly ReplicaState[]): void {
  const ids = new Set(replicas.map((replica) => replica.id));
  if (ids.size !== replicas.length) throw new ProtocolViolation("replica ids must be unique within an agent");
  for (const id of ids) {
    if (id.includes("/")) throw new ProtocolViolation(`replica id ${JSON.stringify(id)} contains '/'`);
  }
}

const isRequestId = (id: string) => /^[0-9a-f]{8}-[0-9a-z]+$/.test(id);

function randomHex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))]
    .map((byte) => byte.toString(16).padStart(2, "0"))
    .join("");
}
