import { Deadline } from "../../shared/deadline.ts";
import { SwitchyardError } from "../../shared/errors.ts";
import { modelKey } from "../../shared/model-names.ts";
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
import type { Idempotence } from "./idempotence.ts";
import { OutlierEjection } from "./outliers.ts";
import type { PoolPresence } from "./pool-presence.ts";
import { ProtocolViolation } from "./protocol-violation.ts";
import type {
  AgentSnapshot,
  PoolSnapshot,
  RelayedRequest,
  RelayFailure,
  RelayOutcome,
} from "./relay-types.ts";
import { RetryBudget } from "./retry-budget.ts";

/**
 * The registry's working memory: which agents are connected, what their replicas hold, and every request
 * between its arrival and its answer. Routing and the queue are the shared Dispatcher's (around the
 * configured policy); this class does the I/O the dispatcher decides on: it sends infer frames, matches
 * result and error frames to waiting callers, and makes sure each request ends in exactly one outcome:
 * the agent's answer, a retry elsewhere, or a clear error (deadline, disconnect, refusal). A request is
 * retried when its agent said it never started it, or once when its agent died while it may have been
 * running and the model is idempotent; every retry takes from a retry budget, so a failing pool is not
 * flooded. A request that finds no agent while agents are expected back (pool-presence.ts) waits for them.
 * Nothing here survives hibernation, and nothing needs to: a request in flight keeps the Durable Object
 * awake, and agents' records are re-added from their sockets on wake.
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
  /**
   * A request is sent again elsewhere (its replica never started it, or its agent died while it may have
   * been running): counted by the pool's metrics.
   */
  onRetry?: () => void;
  /** Whether agents are expected back while none serves; absent: never (no waiting). */
  presence?: Pick<PoolPresence, "expectedBackUntil" | "update">;
  /** Which models may run twice; absent: all of them. */
  idempotence?: Pick<Idempotence, "note" | "allowsRerun">;
  retryBudget?: RetryBudget;
  /** Bytes of request bodies held at once (waiting, queued, in flight); one more gets 429. Default: no limit. */
  maxPendingBytes?: number;
  /** The models an agent with a repository of its own can load (its offers); absent: any. */
  servedBy?: (agentId: string) => ReadonlySet<string>;
}

interface Sent {
  /** What was asked of the replica (its end resolves a load the dispatcher expected there). */
  route: RouteRequest;
  agentId: string;
  replicaId: string;
  address: string;
  sentAt: number;
}

interface PendingRequest {
  id: string;
  call: RelayedRequest;
  route: RouteRequest;
  arrivedAt: number;
  deadline: Deadline;
  attempts: number;
  /** Times it was run again after an agent died while it may have been running (at most once). */
  reruns: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  settle: (outcome: RelayOutcome) => void;
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
/** A request an agent may have started is run again at most this often (Envoy: retry on reset, once). */
const MAX_RERUNS = 1;

export class Relay {
  readonly #options: RelayOptions;
  readonly #now: () => number;
  readonly #dispatcher: Dispatcher<PendingRequest>;
  readonly #agents = new Map<string, AgentLink>();
  readonly #bySocket = new Map<WebSocket, AgentLink>();
  readonly #pending = new Map<string, PendingRequest>();
  readonly #abandoned = new Map<string, Abandoned>();
  /** Requests that found no agent while agents are expected back; sent when one joins. */
  readonly #waitingForAgents = new Set<PendingRequest>();
  #agentsExpectedTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #retryBudget: RetryBudget;
  readonly #outliers = new OutlierEjection();
  #pendingBytes = 0;
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
    this.#retryBudget = options.retryBudget ?? new RetryBudget();
    this.#dispatcher = new Dispatcher<PendingRequest>({
      policy: options.policy,
      maxQueue: options.maxQueue,
      now: this.#now,
    });
  }

  // ---- agents ----

  /**
   * A hello on a fresh socket: the agent joins the pool. `identified` hears the id it is given before any
   * request is routed to it (to keep what its hello says under that id).
   */
  register(socket: WebSocket, hello: Hello, identified?: (agentId: string) => void): AgentLink {
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
      models: hello.repository.kind,
    };
    identified?.(record.id);
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

  /** Every connected agent, draining ones too. */
  links(): AgentLink[] {
    return [...this.#agents.values()];
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
    this.#presenceChanged();
    this.#log("agent-draining", { agent: link.record.id });
  }

  /** Any frame proves the agent alive. */
  touch(link: AgentLink): void {
    link.lastSeen = this.#now();
  }

  /**
   * The agent is gone (closed, errored, broke the protocol, went silent). A request it was working on may
   * or may not have run there: it is run once more elsewhere when its model is idempotent and the retry
   * budget allows, and otherwise fails with a clear 503. Requests still in the queue stay there for the
   * other replicas, or for this agent when it reconnects in time.
   */
  disconnect(link: AgentLink, why: string): void {
    if (this.#bySocket.get(link.socket) !== link) return;
    this.#bySocket.delete(link.socket);
    this.#agents.delete(link.record.id);
    for (const replica of link.record.replicas) {
      this.#dispatcher.removeReplica(replicaAddress(link.record.id, replica.id));
      this.#outliers.forget(replicaAddress(link.record.id, replica.id));
    }
    for (const [id, abandoned] of this.#abandoned) {
      if (abandoned.sent.agentId !== link.record.id) continue;
      clearTimeout(abandoned.timer);
      this.#abandoned.delete(id);
    }
    this.#options.onAgentGone(link);
    this.#presenceChanged();
    this.#log("agent-disconnected", { agent: link.record.id, why });
    for (const pending of [...this.#pending.values()]) {
      const sent = pending.sent;
      if (sent?.agentId !== link.record.id) continue;
      const refusal = this.#rerunRefusal(pending);
      if (refusal === undefined) {
        delete pending.sent;
        pending.reruns += 1;
        this.#log("rerun", { id: pending.id, from: sent.address, why });
        this.#options.onRetry?.();
        this.#submit(pending);
        continue;
      }
      this.#finish(pending, {
        ok: false,
        status: 503,
        code: "unavailable",
        message: `the agent serving this request disconnected (${why}); it may or may not have run, and it was not run again: ${refusal}`,
        replica: sent.address,
        retryAfterSeconds: 1,
      });
    }
  }

  /**
   * Agents whose heartbeats stopped (a host that lost its network leaves a half-open connection that no
   * close event reports). Checked before routing, so requests are not sent into the void.
   */
  staleAgents(): AgentLink[] {
    const now = this.#now();
    const limit = MISSED_HEARTBEATS * this.#options.heartbeatMs;
    return [...this.#agents.values()].filter((link) => now - this.#lastHeard(link) > limit);
  }

  /** The last sign of life: a frame, or a "ping" the runtime answered (possibly while the object slept). */
  #lastHeard(link: AgentLink): number {
    return Math.max(link.lastSeen, this.#options.lastHeartbeat?.(link.socket) ?? 0);
  }

  // ---- frames from agents ----

  onResult(link: AgentLink, header: ResultHeader, body: Uint8Array): void {
    const owner = this.#claim(link, header.id, header.replica);
    if (owner === undefined) return;
    if (header.state !== undefined) this.#applyState(link, header.state);
    this.#outliers.record(owner.sent.address, header.model, 200, "", this.#now());
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
          registryMs: this.#now() - pending.arrivedAt,
          ...header.timings,
        },
      });
    }
    this.#release(owner.sent);
  }

  onError(link: AgentLink, frame: ErrorFrame): void {
    const owner = this.#claim(link, frame.id, frame.replica);
    if (owner === undefined) return;
    if (frame.state !== undefined) this.#applyState(link, frame.state);
    if (owner.kind === "abandoned") {
      this.#release(owner.sent);
      return;
    }
    const { pending, sent } = owner;
    this.#noteFailure(link, sent, pending, frame);
    // Only failures another replica could avoid are retried (a 400 is the request's own fault anywhere).
    const retry =
      !frame.started &&
      (frame.status >= 500 || frame.status === 404) &&
      pending.attempts < MAX_ATTEMPTS &&
      !pending.deadline.passed(this.#now()) &&
      this.#retryBudget.tryRetry(this.#now());
    if (!retry) {
      this.#finish(pending, {
        ok: false,
        status: frame.status,
        message: frame.message,
        replica: sent.address,
      });
      this.#release(sent);
      return;
    }
    // Never started there: free the slot, then route it again (the fresh state steers the policy away
    // from a replica whose load just failed).
    delete pending.sent;
    this.#log("retry", { id: pending.id, from: sent.address, status: frame.status });
    this.#options.onRetry?.();
    this.#release(sent);
    this.#submit(pending);
  }

  // ---- requests ----

  infer(call: RelayedRequest): Promise<RelayOutcome> {
    const now = this.#now();
    this.#counter += 1;
    const id = `${this.#incarnation}-${this.#counter.toString(36)}`;
    this.#retryBudget.request(now);
    const refusal = this.#refuseAtArrival(call);
    if (refusal !== undefined) return Promise.resolve(refusal);
    return new Promise<RelayOutcome>((resolve) => {
      const pending: PendingRequest = {
        id,
        call,
        route: {
          model: call.model,
          ...(call.version === undefined ? {} : { version: call.version }),
          ...(call.hint === undefined ? {} : { hint: call.hint }),
        },
        arrivedAt: now,
        deadline: Deadline.in(call.timeoutMs, now),
        attempts: 0,
        reruns: call.maybeStarted === true ? 1 : 0,
        timer: undefined,
        settle: resolve,
      };
      this.#pending.set(id, pending);
      this.#pendingBytes += call.body.byteLength;
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
    return { agents, queued: this.#dispatcher.queueLength + this.#waitingForAgents.size };
  }

  /** Connected agents that are not draining. */
  get servingAgents(): number {
    let serving = 0;
    for (const link of this.#agents.values()) if (!link.record.draining) serving += 1;
    return serving;
  }

  // ---- timers (the registry's alarm) ----

  /**
   * Whether anything is waiting on agents: requests in flight or queued, or slots held by cancelled ones.
   * While so, the registry checks heartbeats on an alarm, so a silent agent's requests do not sit until
   * their deadlines; an idle pool needs no check (the next request checks before it is routed).
   */
  get busy(): boolean {
    return this.#pending.size > 0 || this.#abandoned.size > 0;
  }

  /**
   * When the registry's alarm should run next: while busy, when the first agent would count as silent (its
   * requests must not wait for their deadlines); and when the routing policy wants free slots offered to the
   * queue again (a bounded wait ends). Undefined: no alarm needed.
   */
  nextAlarmAt(): number | undefined {
    const times: number[] = [];
    const wakeup = this.#dispatcher.nextWakeup();
    if (wakeup !== undefined) times.push(wakeup);
    if (this.busy) {
      const limit = MISSED_HEARTBEATS * this.#options.heartbeatMs;
      for (const link of this.#agents.values()) times.push(this.#lastHeard(link) + limit + 1);
    }
    const ejectionEnds = this.#outliers.nextExpiry();
    if (ejectionEnds !== undefined) times.push(ejectionEnds);
    return times.length === 0 ? undefined : Math.min(...times);
  }

  /** Offers free slots to the queue again (called at nextAlarmAt()), and ends ejections that are over. */
  tick(): void {
    const ejectionEnds = this.#outliers.nextExpiry();
    if (ejectionEnds !== undefined && ejectionEnds <= this.#now()) {
      for (const link of this.#agents.values())
        for (const replica of link.record.replicas) this.#upsert(link, replica);
    }
    this.#sendAll(this.#dispatcher.tick());
  }

  /** A replica's run failed: a server error in a row too many takes the model out of routing there for a while. */
  #noteFailure(link: AgentLink, sent: Sent, pending: PendingRequest, frame: ErrorFrame): void {
    const state = link.record.replicas.find((replica) => replica.id === sent.replicaId);
    const version =
      pending.call.version ?? state?.loaded.find((model) => model.name === pending.call.model)?.version;
    if (version === undefined || state === undefined) return;
    const model = { name: pending.call.model, version };
    if (!this.#outliers.record(sent.address, model, frame.status, frame.message, this.#now())) return;
    this.#log("outlier-ejected", { replica: sent.address, model: modelKey(model) });
    this.#upsert(link, state);
  }

  // ---- internals ----

  #add(socket: WebSocket, record: AgentRecord): AgentLink {
    const link: AgentLink = { socket, record, lastSeen: this.#now() };
    this.#agents.set(record.id, link);
    this.#bySocket.set(socket, link);
    for (const replica of record.replicas) this.#upsert(link, replica);
    this.#options.onAgentChanged(link);
    this.#presenceChanged();
    return link;
  }

  /** A request that cannot be taken in at all: the registry holds too many bytes, or it must not rerun. */
  #refuseAtArrival(call: RelayedRequest): RelayFailure | undefined {
    const maxBytes = this.#options.maxPendingBytes ?? Number.POSITIVE_INFINITY;
    if (this.#pendingBytes + call.body.byteLength > maxBytes) {
      return {
        ok: false,
        status: 429,
        code: "queue_full",
        message: `the pool holds ${this.#pendingBytes} bytes of requests already (limit ${maxBytes}); retry later`,
        retryAfterSeconds: 1,
      };
    }
    if (call.maybeStarted === true && !this.#allowsRerun(call)) {
      return {
        ok: false,
        status: 503,
        code: "unavailable",
        message: `the pool's registry restarted while this request was in flight; it may or may not have run, and '${call.model}' is not idempotent, so it was not run again`,
        retryAfterSeconds: 1,
      };
    }
    return undefined;
  }

  #allowsRerun(call: RelayedRequest): boolean {
    return this.#options.idempotence?.allowsRerun(call.model, call.version) ?? true;
  }

  /** Why a request that may have started must not run again; undefined when it may. */
  #rerunRefusal(pending: PendingRequest): string | undefined {
    if (pending.reruns >= MAX_RERUNS) return "it had been run again once already";
    if (!this.#allowsRerun(pending.call))
      return `'${pending.call.model}' is not idempotent (its config.json says so)`;
    if (pending.deadline.passed(this.#now())) return "its deadline has passed";
    if (!this.#retryBudget.tryRetry(this.#now()))
      return "the pool's retry budget is spent (too many retries lately)";
    return undefined;
  }

  /** Agents joined, left or started draining: tell the presence record, and wake requests waiting for them. */
  #presenceChanged(): void {
    const serving = this.servingAgents;
    this.#options.presence?.update(serving, this.#now());
    if (serving === 0 || this.#waitingForAgents.size === 0) return;
    const waiting = [...this.#waitingForAgents];
    this.#waitingForAgents.clear();
    this.#stopAgentsExpectedTimer();
    for (const pending of waiting) this.#submit(pending);
  }

  /**
   * Keeps a request that found no agent when agents are expected back (pool-presence.ts): it is routed when
   * one joins, fails at its deadline, or fails with 503 once the agents' grace is over. False when no agent
   * is expected (the caller answers 503 now).
   */
  #waitForAgents(pending: PendingRequest): boolean {
    const until = this.#options.presence?.expectedBackUntil(this.#now());
    if (until === undefined) return false;
    if (this.#waitingForAgents.size + this.#dispatcher.queueLength >= this.#options.maxQueue) {
      this.#finish(pending, {
        ok: false,
        status: 429,
        code: "queue_full",
        message: `no agent is connected yet and ${this.#waitingForAgents.size} requests are already waiting for one; retry later`,
        retryAfterSeconds: 1,
      });
      return true;
    }
    this.#waitingForAgents.add(pending);
    // Waiting is no attempt: the request keeps its retries for the agents it will meet.
    pending.attempts -= 1;
    this.#stopAgentsExpectedTimer();
    this.#agentsExpectedTimer = setTimeout(
      () => this.#agentsDidNotReturn(),
      Math.max(0, until - this.#now()),
    );
    return true;
  }

  #stopAgentsExpectedTimer(): void {
    if (this.#agentsExpectedTimer !== undefined) clearTimeout(this.#agentsExpectedTimer);
    this.#agentsExpectedTimer = undefined;
  }

  #agentsDidNotReturn(): void {
    this.#agentsExpectedTimer = undefined;
    const until = this.#options.presence?.expectedBackUntil(this.#now());
    if (until !== undefined) {
      // The grace was extended meanwhile (another agent came and went).
      this.#agentsExpectedTimer = setTimeout(() => this.#agentsDidNotReturn(), until - this.#now());
      return;
    }
    for (const pending of [...this.#waitingForAgents]) {
      this.#finish(pending, {
        ok: false,
        status: 503,
        code: "unavailable",
        message: `no backend can serve '${pending.call.model}': no agent is connected, and the agents that were did not come back in time`,
        retryAfterSeconds: 1,
      });
    }
  }

  #upsert(link: AgentLink, replica: ReplicaState): void {
    this.#options.idempotence?.note([replica]);
    const address = replicaAddress(link.record.id, replica.id);
    // The router sees ejected models as failed there (outliers.ts).
    const view = this.#outliers.view(address, replica, this.#now());
    const dispatches = this.#dispatcher.upsertReplica(address, view, {
      hints: link.record.hints,
      draining: link.record.draining,
      serves: link.record.models === "own" ? this.#options.servedBy?.(link.record.id) : undefined,
    });
    this.#sendAll(dispatches);
  }

  /** A replica's fresh state from a result or error frame, or from a query's answer. */
  replicaReported(link: AgentLink, state: ReplicaState): void {
    if (this.#bySocket.get(link.socket) !== link) return;
    this.#applyState(link, state);
  }

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
    const routed = this.#dispatcher.submit(pending.route, pending, pending.deadline.at);
    switch (routed.kind) {
      case "dispatched":
        this.#sendAll([routed.dispatch]);
        return;
      case "queued":
        return;
      case "unavailable":
        if (this.#waitForAgents(pending)) return;
        this.#finish(pending, failureOf(routed.error));
        return;
      case "queue_full":
      case "not_found":
        this.#finish(pending, failureOf(routed.error));
    }
  }

  #release(sent: Sent): void {
    this.#sendAll(this.#dispatcher.release(sent.address, sent.route));
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
      timeoutMs: Math.max(1, pending.deadline.remainingMs(now)),
      ...(pending.call.headerLength === undefined ? {} : { headerLength: pending.call.headerLength }),
      ...(pending.call.requestId === undefined ? {} : { requestId: pending.call.requestId }),
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
    pending.sent = { route: pending.route, agentId, replicaId, address: dispatch.address, sentAt: now };
    return undefined;
  }

  /** The request's deadline passed: 504, wherever it is (waiting for agents, for a slot, or running). */
  #onDeadline(pending: PendingRequest): void {
    pending.timer = undefined;
    if (this.#pending.get(pending.id) !== pending) return;
    const { model } = pending.call;
    const sent = pending.sent;
    if (this.#waitingForAgents.has(pending)) {
      const error = pending.deadline.exceeded(
        `no agent was connected to serve '${model}', and none came back`,
      );
      this.#finish(pending, failureOf(error));
      return;
    }
    if (sent === undefined) {
      this.#dispatcher.cancel((queued) => queued === pending);
      this.#finish(pending, failureOf(pending.deadline.exceeded(`no replica for '${model}' became free`)));
      return;
    }
    // The agent is told to stop; its slot stays taken until it answers (or the grace runs out), since the
    // work may still be running there.
    this.#finish(pending, {
      ...failureOf(pending.deadline.exceeded(`'${model}' did not answer`)),
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
        this.#release(sent);
      }, ABANDONED_GRACE_MS),
    });
  }

  #finish(pending: PendingRequest, outcome: RelayOutcome): void {
    if (this.#pending.get(pending.id) !== pending) return;
    this.#pending.delete(pending.id);
    this.#pendingBytes -= pending.call.body.byteLength;
    this.#waitingForAgents.delete(pending);
    if (pending.timer !== undefined) clearTimeout(pending.timer);
    pending.settle(outcome);
  }

  #log(event: string, fields: Record<string, unknown>): void {
    this.#options.log?.(event, fields);
  }
}

function failureOf(error: unknown): RelayFailure {
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
