import { SwitchyardError } from "../../shared/errors.ts";
import { modelKey } from "../../shared/model-names.ts";
import type { ErrorFrame, Hello, ResultHeader } from "../../shared/protocol/frames.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";
import { type Dispatch, Dispatcher } from "../../shared/routing/dispatcher.ts";
import type { RoutingPolicy } from "../../shared/routing/types.ts";
import { type AgentLink, type AgentRecord, replicaAddress, splitReplicaAddress } from "./agent-link.ts";
import { AgentRoster } from "./agent-roster.ts";
import { AgentWait } from "./agent-wait.ts";
import type { Idempotence } from "./idempotence.ts";
import { cancelFrame, inferFrame } from "./outgoing-frames.ts";
import { OutlierEjection } from "./outliers.ts";
import type { PoolPresence } from "./pool-presence.ts";
import { ProtocolViolation } from "./protocol-violation.ts";
import type { PoolSnapshot, RelayedRequest, RelayFailure, RelayOutcome } from "./relay-types.ts";
import { type PendingRequest, RequestLedger, type Sent } from "./request-ledger.ts";
import { RetryBudget } from "./retry-budget.ts";
import { BUDGET_SPENT, rerunRefusal, retriesAfterError } from "./retry-rules.ts";

/**
 * The registry's working memory: which agents are connected (agent-roster.ts), what their replicas hold,
 * and every request between its arrival and its answer (request-ledger.ts). Routing and the queue are the
 * shared Dispatcher's (around the configured policy); this class does the I/O the dispatcher decides on: it
 * sends infer frames (outgoing-frames.ts), matches
 * result and error frames to waiting callers, and makes sure each request ends in exactly one outcome:
 * the agent's answer, a retry elsewhere, or a clear error (deadline, disconnect, refusal). A request is
 * retried when its agent said it never started it, or once when its agent died while it may have been
 * running and the model is idempotent (retry-rules.ts); every retry takes from a retry budget, so a failing
 * pool is not flooded. A request that finds no agent while agents are expected back waits for them
 * (agent-wait.ts).
 * Nothing here survives hibernation, and nothing needs to: a request in flight keeps the Durable Object
 * awake, and agents' records are re-added from their sockets on wake.
 */
export interface RelayOptions {
  policy: RoutingPolicy;
  maxQueue: number;
  heartbeatMs: number;
  now?: () => number;
  /**
   * A change to an agent's record, to be persisted (socket attachment). `replicas` is set when only the
   * states of these replicas changed, the agent keeping the same replicas (a result's piggybacked state, once
   * per request, or a state frame); absent for a change of membership (hello, drain, replicas added or gone).
   */
  onAgentChanged: (link: AgentLink, replicas?: readonly ReplicaState[]) => void;
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

export class Relay {
  readonly #options: RelayOptions;
  readonly #now: () => number;
  readonly #dispatcher: Dispatcher<PendingRequest>;
  readonly #roster: AgentRoster;
  readonly #ledger: RequestLedger;
  readonly #agentWait: AgentWait<PendingRequest>;
  readonly #retryBudget: RetryBudget;
  readonly #outliers = new OutlierEjection();

  constructor(options: RelayOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#retryBudget = options.retryBudget ?? new RetryBudget();
    this.#dispatcher = new Dispatcher<PendingRequest>({
      policy: options.policy,
      maxQueue: options.maxQueue,
      now: this.#now,
    });
    this.#roster = new AgentRoster({
      heartbeatMs: options.heartbeatMs,
      now: this.#now,
      lastHeartbeat: options.lastHeartbeat,
    });
    this.#ledger = new RequestLedger({
      now: this.#now,
      onDeadline: (pending) => this.#onDeadline(pending),
      onAbandonedExpired: (sent) => this.#release(sent),
    });
    this.#agentWait = new AgentWait<PendingRequest>({
      now: this.#now,
      expectedBackUntil: (now) => options.presence?.expectedBackUntil(now),
      giveUp: (waiting) => {
        for (const pending of waiting) {
          this.#finish(pending, {
            ok: false,
            status: 503,
            code: "unavailable",
            message: `no backend can serve '${pending.call.model}': no agent is connected, and the agents that were did not come back in time`,
            retryAfterSeconds: 1,
          });
        }
      },
    });
  }

  // ---- agents ----

  /**
   * A hello on a fresh socket: the agent joins the pool. `identified` hears the id it is given before any
   * request is routed to it (to keep what its hello says under that id).
   */
  register(socket: WebSocket, hello: Hello, identified?: (agentId: string) => void): AgentLink {
    const record = this.#roster.recordOf(socket, hello);
    assertUniqueReplicaIds(hello.replicas);
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
    return this.#roster.linkOf(socket);
  }

  /** Every connected agent, draining ones too. */
  links(): AgentLink[] {
    return this.#roster.links();
  }

  /** A state frame: the agent's replicas as they are now (replicas it no longer lists are gone). */
  updateState(link: AgentLink, replicas: ReplicaState[]): void {
    assertUniqueReplicaIds(replicas);
    const listed = new Set(replicas.map((replica) => replica.id));
    const before = link.record.replicas;
    for (const replica of before) {
      if (!listed.has(replica.id)) this.#dispatcher.removeReplica(replicaAddress(link.record.id, replica.id));
    }
    const sameReplicas =
      before.length === replicas.length && before.every((replica) => listed.has(replica.id));
    link.record.replicas = replicas;
    for (const replica of replicas) this.#upsert(link, replica);
    // A send to this agent may have failed meanwhile and taken it out: then there is nothing to keep.
    if (this.#roster.isCurrent(link)) this.#options.onAgentChanged(link, sameReplicas ? replicas : undefined);
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
    this.#roster.touch(link);
  }

  /**
   * The agent is gone (closed, errored, broke the protocol, went silent). A request it was working on may
   * or may not have run there: it is run once more elsewhere when its model is idempotent and the retry
   * budget allows, and otherwise fails with a clear 503. Requests still in the queue stay there for the
   * other replicas, or for this agent when it reconnects in time.
   */
  disconnect(link: AgentLink, why: string): void {
    if (!this.#roster.remove(link)) return;
    for (const replica of link.record.replicas) {
      const address = replicaAddress(link.record.id, replica.id);
      this.#dispatcher.removeReplica(address);
      this.#outliers.forget(address);
    }
    this.#ledger.forgetAbandonedBy(link.record.id);
    this.#options.onAgentGone(link);
    this.#presenceChanged();
    this.#log("agent-disconnected", { agent: link.record.id, why });
    for (const pending of this.#ledger.sentTo(link.record.id)) {
      const sent = pending.sent;
      if (sent === undefined) continue;
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

  /** Agents whose heartbeats stopped: checked before routing, so requests are not sent into the void. */
  staleAgents(): AgentLink[] {
    return this.#roster.silent();
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
    const retry =
      retriesAfterError(frame, {
        attempts: pending.attempts,
        deadlinePassed: pending.deadline.passed(this.#now()),
      }) && this.#retryBudget.tryRetry(this.#now());
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
    this.#retryBudget.request(this.#now());
    const refusal = this.#refuseAtArrival(call);
    if (refusal !== undefined) return Promise.resolve(refusal);
    return new Promise<RelayOutcome>((resolve) => {
      const pending = this.#ledger.open(call, resolve, call.maybeStarted === true ? 1 : 0);
      this.#submit(pending);
    });
  }

  snapshot(): PoolSnapshot {
    const inFlight = new Map(this.#dispatcher.replicas().map((view) => [view.address, view.inFlight]));
    return {
      agents: this.#roster.snapshot((address) => inFlight.get(address) ?? 0),
      queued: this.#dispatcher.queueLength + this.#agentWait.size,
    };
  }

  /** Connected agents that are not draining. */
  get servingAgents(): number {
    return this.#roster.serving;
  }

  // ---- timers (the registry's alarm) ----

  /**
   * Whether anything is waiting on agents: requests in flight or queued, or slots held by cancelled ones.
   * While so, the registry checks heartbeats on an alarm, so a silent agent's requests do not sit until
   * their deadlines; an idle pool needs no check (the next request checks before it is routed).
   */
  get busy(): boolean {
    return this.#ledger.busy;
  }

  /**
   * When the registry's alarm should run next: while busy, when the first agent would count as silent (its
   * requests must not wait for their deadlines); and when the routing policy wants free slots offered to the
   * queue again (a bounded wait ends). Undefined: no alarm needed.
   */
  nextAlarmAt(): number | undefined {
    const times = [
      this.#dispatcher.nextWakeup(),
      this.busy ? this.#roster.nextSilenceAt() : undefined,
      this.#outliers.nextExpiry(),
    ].filter((at) => at !== undefined);
    return times.length === 0 ? undefined : Math.min(...times);
  }

  /** Offers free slots to the queue again (called at nextAlarmAt()), and ends ejections that are over. */
  tick(): void {
    const ejectionEnds = this.#outliers.nextExpiry();
    if (ejectionEnds !== undefined && ejectionEnds <= this.#now()) {
      for (const link of this.#roster.links())
        for (const replica of link.record.replicas) this.#upsert(link, replica);
    }
    this.#sendAll(this.#dispatcher.tick());
  }

  /** A replica's fresh state from a result or error frame, or from a query's answer. */
  replicaReported(link: AgentLink, state: ReplicaState): void {
    if (!this.#roster.isCurrent(link)) return;
    this.#applyState(link, state);
  }

  // ---- internals ----

  #add(socket: WebSocket, record: AgentRecord): AgentLink {
    const link = this.#roster.add(socket, record);
    for (const replica of record.replicas) this.#upsert(link, replica);
    this.#options.onAgentChanged(link);
    this.#presenceChanged();
    return link;
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

  /** A request that cannot be taken in at all: the registry holds too many bytes, or it must not rerun. */
  #refuseAtArrival(call: RelayedRequest): RelayFailure | undefined {
    const maxBytes = this.#options.maxPendingBytes ?? Number.POSITIVE_INFINITY;
    if (this.#ledger.bytes + call.body.byteLength > maxBytes) {
      return {
        ok: false,
        status: 429,
        code: "queue_full",
        message: `the pool holds ${this.#ledger.bytes} bytes of requests already (limit ${maxBytes}); retry later`,
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

  /** Why a request that may have started must not run again; undefined when it may (a retry is spent). */
  #rerunRefusal(pending: PendingRequest): string | undefined {
    const refusal = rerunRefusal({
      model: pending.call.model,
      reruns: pending.reruns,
      idempotent: this.#allowsRerun(pending.call),
      deadlinePassed: pending.deadline.passed(this.#now()),
    });
    if (refusal !== undefined) return refusal;
    return this.#retryBudget.tryRetry(this.#now()) ? undefined : BUDGET_SPENT;
  }

  /** Agents joined, left or started draining: tell the presence record, and wake requests waiting for them. */
  #presenceChanged(): void {
    const serving = this.servingAgents;
    this.#options.presence?.update(serving, this.#now());
    if (serving === 0) return;
    for (const pending of this.#agentWait.release()) this.#submit(pending);
  }

  /**
   * Keeps a request that found no agent when agents are expected back: it is routed when one joins, fails
   * at its deadline, or fails with 503 once the agents' grace is over. False when no agent is expected (the
   * caller answers 503 now).
   */
  #waitForAgents(pending: PendingRequest): boolean {
    const until = this.#agentWait.expectedUntil();
    if (until === undefined) return false;
    if (this.#agentWait.size + this.#dispatcher.queueLength >= this.#options.maxQueue) {
      this.#finish(pending, {
        ok: false,
        status: 429,
        code: "queue_full",
        message: `no agent is connected yet and ${this.#agentWait.size} requests are already waiting for one; retry later`,
        retryAfterSeconds: 1,
      });
      return true;
    }
    // Waiting is no attempt: the request keeps its retries for the agents it will meet.
    pending.attempts -= 1;
    this.#agentWait.wait(pending, until);
    return true;
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

  #applyState(link: AgentLink, state: ReplicaState): void {
    const index = link.record.replicas.findIndex((replica) => replica.id === state.id);
    if (index < 0) link.record.replicas.push(state);
    else link.record.replicas[index] = state;
    this.#upsert(link, state);
    if (this.#roster.isCurrent(link)) this.#options.onAgentChanged(link, index < 0 ? undefined : [state]);
  }

  /** The request an agent's answer belongs to; undefined for an answer nobody waits for any more. */
  #claim(
    link: AgentLink,
    id: string,
    replicaId: string,
  ):
    | { kind: "pending"; pending: PendingRequest; sent: Sent }
    | { kind: "abandoned"; sent: Sent }
    | undefined {
    const claim = this.#ledger.claim(link.record.id, id, replicaId);
    if (claim.kind !== "stale") return claim;
    this.#log("stale-answer", { agent: link.record.id, id });
    return undefined;
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
    const { agentId, replicaId } = splitReplicaAddress(dispatch.address);
    const link = this.#roster.get(agentId);
    if (!this.#ledger.isOpen(pending)) return dispatch.address;
    if (link === undefined) {
      this.#submit(pending);
      return dispatch.address;
    }
    const now = this.#now();
    let frame: Uint8Array;
    try {
      frame = inferFrame(pending.id, replicaId, pending.call, pending.deadline.remainingMs(now));
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
    const { model } = pending.call;
    const sent = pending.sent;
    if (this.#agentWait.has(pending)) {
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
    const link = this.#roster.get(sent.agentId);
    if (link === undefined) return;
    try {
      link.socket.send(cancelFrame(pending.id));
    } catch {
      // Its close event will follow.
    }
    this.#ledger.abandon(pending.id, sent);
  }

  #finish(pending: PendingRequest, outcome: RelayOutcome): void {
    this.#agentWait.delete(pending);
    this.#ledger.settle(pending, outcome);
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
