import { SwitchyardError } from "../../shared/errors.ts";
import { modelKey } from "../../shared/model-names.ts";
import type { Hello } from "../../shared/protocol/frames.ts";
import { mergeTimings, type ReplicaState } from "../../shared/protocol/replica-state.ts";
import { type DirectPermit, directPermit, opensDirectPath } from "../../shared/routing/direct-hits.ts";
import { type Dispatch, Dispatcher } from "../../shared/routing/dispatcher.ts";
import { capacityUnder } from "../../shared/routing/replica-facts.ts";
import { routeOf } from "../../shared/routing/route-request.ts";
import type { RoutingPolicy } from "../../shared/routing/types.ts";
import type { RequestRecord } from "../metrics/pool-counters.ts";
import type {
  AdoptAnswer,
  Decision,
  DirectRun,
  PassReason,
  PoolSnapshot,
  RelayFailure,
  RunReport,
  SlotAnswer,
  SlotAsk,
} from "../pool-calls.ts";
import { type AgentLink, type AgentRecord, replicaAddress, splitReplicaAddress } from "./agent-link.ts";
import { AgentRoster } from "./agent-roster.ts";
import { AgentWait } from "./agent-wait.ts";
import type { Idempotence } from "./idempotence.ts";
import { OutlierEjection } from "./outliers.ts";
import type { PoolPresence } from "./pool-presence.ts";
import { ProtocolViolation } from "./protocol-violation.ts";
import { type PendingAsk, RequestLedger } from "./request-ledger.ts";
import { RetryBudget } from "./retry-budget.ts";
import { BUDGET_SPENT, rerunRefusal, retriesAfterError } from "./retry-rules.ts";

/**
 * The registry's working memory and its decisions: which agents are connected (agent-roster.ts), what their
 * replicas hold, the slots it granted and the asks still waiting (request-ledger.ts). Routing and the queue
 * are the shared Dispatcher's (around the configured policy); this class grants what the dispatcher decides,
 * takes slots back when agents' relays release them, and decides what happens to a run that failed: a retry
 * when its agent said it never started it, a rerun once when its agent died while it may have been running
 * and the model is idempotent (retry-rules.ts), each taking from a retry budget so that a failing pool is not
 * flooded; otherwise the failure stands. An ask that finds no agent while agents are expected back waits for
 * them (agent-wait.ts). It never sees a payload byte: the Worker sends the body to the agent's relay.
 * Nothing here survives hibernation, and nothing needs to: an ask waiting (its RPC) or a slot held (its
 * timer) keeps the Durable Object awake, and agents' records are re-added from their sockets on wake.
 */
export interface SchedulerOptions {
  policy: RoutingPolicy;
  maxQueue: number;
  heartbeatMs: number;
  now?: () => number;
  /**
   * A change to an agent's record, to be persisted (socket attachment). `replicas` is set when only the
   * states of these replicas changed, the agent keeping the same replicas (a run's piggybacked state, once
   * per request, or a state frame); absent for a change of membership (hello, drain, replicas added or gone).
   */
  onAgentChanged: (link: AgentLink, replicas?: readonly ReplicaState[]) => void;
  /** An agent is gone (`why`, for its relay); its socket is being or has been closed. */
  onAgentGone: (link: AgentLink, why: string) => void;
  /** When the runtime last answered this socket's "ping" (possibly while the object hibernated). */
  lastHeartbeat?: (socket: WebSocket) => number | undefined;
  log?: (event: string, fields: Record<string, unknown>) => void;
  /**
   * A request is run again elsewhere (its replica never started it, or its agent died while it may have
   * been running): counted by the pool's metrics.
   */
  onRetry?: () => void;
  /** An agent's relay took a direct hit, which this registry adopted (shared/routing/direct-hits.ts). */
  onDirect?: () => void;
  /** An ask was passed on to the model's next shard (a sharded pool), and why. */
  onPassed?: (why: PassReason) => void;
  /** A request's outcome is known (what its client got), for the metrics. */
  onFinished?: (request: RequestRecord) => void;
  /** Whether agents are expected back while none serves; absent: never (no waiting). */
  presence?: Pick<PoolPresence, "expectedBackUntil" | "update">;
  /** Which models may run twice; absent: all of them. */
  idempotence?: Pick<Idempotence, "note" | "allowsRerun">;
  retryBudget?: RetryBudget;
  /** The models an agent with a repository of its own can load (its offers); absent: any. */
  servedBy?: (agentId: string) => ReadonlySet<string>;
  /** A model's max_copies (its serving policy, model-policies.ts); absent or undefined: no cap. */
  maxCopiesOf?: (model: string) => number | undefined;
}

export class Scheduler {
  readonly #options: SchedulerOptions;
  readonly #now: () => number;
  readonly #dispatcher: Dispatcher<PendingAsk>;
  readonly #roster: AgentRoster;
  readonly #ledger: RequestLedger;
  readonly #agentWait: AgentWait<PendingAsk>;
  readonly #retryBudget: RetryBudget;
  readonly #outliers = new OutlierEjection();

  constructor(options: SchedulerOptions) {
    this.#options = options;
    this.#now = options.now ?? Date.now;
    this.#retryBudget = options.retryBudget ?? new RetryBudget();
    this.#dispatcher = new Dispatcher<PendingAsk>({
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
      onHeldExpired: (held) => {
        this.#log("slot-expired", { id: held.ticket, replica: held.address });
        this.#sendAll(this.#dispatcher.release(held.address, held.route));
      },
    });
    this.#agentWait = new AgentWait<PendingAsk>({
      now: this.#now,
      expectedBackUntil: (now) => options.presence?.expectedBackUntil(now),
      giveUp: (waiting) => {
        for (const pending of waiting) {
          this.#fail(pending, {
            ok: false,
            status: 503,
            code: "unavailable",
            message: `no backend can serve '${pending.ask.model}': no agent is connected, and the agents that were did not come back in time`,
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
  updateState(link: AgentLink, reported: ReplicaState[]): void {
    assertUniqueReplicaIds(reported);
    // A replica's state older than the one known (a result's, through the relay) is kept as known.
    const known = new Map(link.record.replicas.map((replica) => [replica.id, replica]));
    const replicas = reported.map((state) => {
      const current = known.get(state.id);
      return current !== undefined && isStale(current, state)
        ? withTimingsOf(state, current)
        : kept(current, state);
    });
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
   * The agent is gone (closed, errored, broke the protocol, went silent): its replicas leave routing, and the
   * slots held there go with them. Its relay fails the runs it had there (the registry tells it, see
   * registry.ts), and their releases decide on reruns. Asks still in the queue stay there for the other
   * replicas, or for this agent when it reconnects in time.
   */
  disconnect(link: AgentLink, why: string): void {
    if (!this.#roster.remove(link)) return;
    for (const replica of link.record.replicas) {
      const address = replicaAddress(link.record.id, replica.id);
      this.#dispatcher.removeReplica(address);
      this.#outliers.forget(address);
    }
    this.#ledger.forgetAgent(link.record.id);
    this.#options.onAgentGone(link, why);
    this.#presenceChanged();
    // Under a model's max_copies, or beside pins, the replicas left may now take what waited for that one.
    this.#sendAll(this.#dispatcher.tick());
    this.#log("agent-disconnected", { agent: link.record.id, why });
  }

  /** Agents whose heartbeats stopped: checked before routing, so requests are not sent into the void. */
  staleAgents(): AgentLink[] {
    return this.#roster.silent();
  }

  // ---- requests ----

  /**
   * A slot for a request (no body): granted at once, or when the queue's turn comes, or when agents come
   * back; otherwise the failure its client gets. Answers every expected failure as a value.
   */
  reserve(ask: SlotAsk): Promise<SlotAnswer> {
    // Each client request counts once toward the retry budget: at its first ask, in the shard that keeps it
    // (an ask a sharded pool's shard passes on is the next shard's request).
    const first = ask.attempts === 0 && ask.reruns === 0;
    if (first && ask.pass === "never") this.#retryBudget.request(this.#now());
    return new Promise<SlotAnswer>((resolve) => {
      const answer = (slot: SlotAnswer) => {
        if (first && ask.pass !== "never" && slot.ok !== "passed") this.#retryBudget.request(this.#now());
        resolve(slot);
      };
      const pending = this.#ledger.open(ask, answer);
      const maxCopies = this.#options.maxCopiesOf?.(ask.model);
      if (maxCopies !== undefined) pending.route.maxCopies = maxCopies;
      this.#submit(pending);
    });
  }

  /**
   * A granted run ended (its relay says how): the slot comes back with the replica's fresh state, the
   * metrics count what the client got, and for a run that failed the retry rules decide whether the Worker
   * asks again. A release for a slot not held any more (its agent left, its safety timer ran out, or it was
   * granted by this object's previous life) changes no slot, but its state and its count still apply.
   */
  release(report: RunReport): Decision {
    // A timed-out run keeps its slot: the agent may still be running it, and `freed` follows.
    const timedOut = report.result.kind === "timed-out";
    const held = timedOut ? undefined : this.#ledger.release(report.ticket);
    if (timedOut) this.#ledger.claim(report.ticket);
    let decision: Decision;
    let current: AgentLink | undefined;
    try {
      const link = this.#roster.get(report.agentId);
      current = link !== undefined && link.record.channel === report.channel ? link : undefined;
      // The fresh state first: a retry is then routed away from a replica whose load just failed.
      if (current !== undefined && report.state !== undefined) this.#applyState(current, report.state);
      decision = this.#decide(report, current);
    } finally {
      // Whatever happened above, the slot goes back: a release is not retried by anyone.
      if (held !== undefined) this.#sendAll(this.#dispatcher.release(held.address, held.route));
    }
    // After the slot went to the queue: a permit only while nothing is left waiting.
    if (decision.again || report.result.kind !== "ok" || current === undefined) return decision;
    const direct = this.#directPermit(report);
    return direct === undefined ? decision : { ...decision, direct };
  }

  /**
   * A direct hit its agent's relay took without asking (shared/routing/direct-hits.ts): its slot is taken
   * here as if granted, under the relay's ticket, and it counts toward the retry budget as a request;
   * `over` when the replica now holds more than its capacity here (grants on their way to the relay and
   * direct hits raced for its last slots).
   * `refused` when this registry does not know the agent (any more) or its replica, or the agent drains:
   * then nothing is taken, and the run's release frees nothing.
   */
  adopt(run: DirectRun): AdoptAnswer {
    const link = this.#roster.get(run.agentId);
    if (link === undefined || link.record.channel !== run.channel || link.record.draining) return "refused";
    const address = replicaAddress(run.agentId, run.replicaId);
    const route = routeOf(run);
    const now = this.#now();
    const held = { ticket: run.ticket, route, agentId: run.agentId, replicaId: run.replicaId, address };
    if (!this.#ledger.adopt({ ...held, deadlineAt: now + run.timeoutMs })) return "refused";
    if (!this.#dispatcher.adopt(address, route)) {
      this.#ledger.release(run.ticket);
      return "refused";
    }
    this.#retryBudget.request(now);
    this.#options.onDirect?.();
    const replica = this.#dispatcher.replica(address);
    const over = replica !== undefined && replica.inFlight > capacityUnder(this.#dispatcher.policy, replica);
    return over ? "over" : "taken";
  }

  /** The permit a successful run's release carries for its replica and model, if any (direct-hits.ts). */
  #directPermit(report: RunReport): DirectPermit | undefined {
    const { policy } = this.#dispatcher;
    if (policy.directHits !== true) return undefined;
    const replica = this.#dispatcher.replica(replicaAddress(report.agentId, report.replicaId));
    return directPermit({
      request: routeOf(report),
      replica,
      waiting: this.#waiting,
      capacity: replica === undefined ? undefined : capacityUnder(policy, replica),
    });
  }

  /** A granted run is still running at its agent (its relay says so after a while): keep its slot. */
  claim(ticket: string): void {
    this.#ledger.claim(ticket);
  }

  #decide(report: RunReport, link: AgentLink | undefined): Decision {
    const { result } = report;
    const finished = (status: number) =>
      this.#options.onFinished?.({ model: report.model, status, totalMs: report.totalMs });
    switch (result.kind) {
      case "ok":
        this.#outliers.record(report.replica, result.model, 200, "", this.#now());
        this.#options.onFinished?.({
          model: report.model,
          status: 200,
          totalMs: report.totalMs,
          cache: result.cache,
          phases: result.phases,
        });
        return { again: false };
      case "timed-out":
      case "expired":
        finished(504);
        return { again: false };
      case "freed":
        return { again: false };
      case "error":
      case "lost": {
        if (result.kind === "error" && link !== undefined) this.#noteFailure(link, report, result);
        if (!result.started) {
          const status = result.kind === "error" ? result.status : 503;
          const retry =
            retriesAfterError(
              { started: false, status },
              { attempts: report.attempts, deadlinePassed: report.deadlinePassed },
            ) && this.#retryBudget.tryRetry(this.#now());
          if (!retry) {
            finished(status);
            return { again: false };
          }
          this.#log("retry", { id: report.ticket, from: report.replica, status });
          this.#options.onRetry?.();
          return { again: true, attempts: report.attempts, reruns: report.reruns };
        }
        if (result.kind === "error") {
          finished(result.status);
          return { again: false };
        }
        const refusal = this.#rerunRefusal(report);
        if (refusal !== undefined) {
          finished(503);
          return { again: false, refusal };
        }
        this.#log("rerun", { id: report.ticket, from: report.replica, why: result.why });
        this.#options.onRetry?.();
        return { again: true, attempts: report.attempts, reruns: report.reruns + 1 };
      }
    }
  }

  snapshot(): PoolSnapshot {
    const inFlight = new Map(this.#dispatcher.replicas().map((view) => [view.address, view.inFlight]));
    return {
      agents: this.#roster.snapshot((address) => inFlight.get(address) ?? 0),
      queued: this.#waiting,
    };
  }

  /** Connected agents that are not draining. */
  get servingAgents(): number {
    return this.#roster.serving;
  }

  // ---- timers (the registry's alarm) ----

  /**
   * Whether anything is waiting on agents: asks waiting, or slots granted and not released.
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
  #noteFailure(link: AgentLink, report: RunReport, error: { status: number; message: string }): void {
    const state = link.record.replicas.find((replica) => replica.id === report.replicaId);
    const version = report.version ?? state?.loaded.find((model) => model.name === report.model)?.version;
    if (version === undefined || state === undefined) return;
    const model = { name: report.model, version };
    if (!this.#outliers.record(report.replica, model, error.status, error.message, this.#now())) return;
    this.#log("outlier-ejected", { replica: report.replica, model: modelKey(model) });
    this.#upsert(link, state);
  }

  /** Why a request that may have started must not run again; undefined when it may (a retry is spent). */
  #rerunRefusal(report: RunReport): string | undefined {
    const refusal = rerunRefusal({
      model: report.model,
      reruns: report.reruns,
      idempotent: this.#options.idempotence?.allowsRerun(report.model, report.version) ?? true,
      deadlinePassed: report.deadlinePassed,
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
  #waitForAgents(pending: PendingAsk): boolean {
    const until = this.#agentWait.expectedUntil();
    if (until === undefined) return false;
    if (this.#waiting >= this.#options.maxQueue) {
      this.#fail(pending, {
        ok: false,
        status: 429,
        code: "queue_full",
        message: `no agent is connected yet and ${this.#agentWait.size} requests are already waiting for one; retry later`,
        retryAfterSeconds: 1,
      });
      return true;
    }
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

  #applyState(link: AgentLink, reported: ReplicaState): void {
    const index = link.record.replicas.findIndex((replica) => replica.id === reported.id);
    const current = link.record.replicas[index];
    // Older than what is known: it came the longer way (see ReplicaState.seq). Only its timings may be news.
    if (current !== undefined && isStale(current, reported)) {
      const refreshed = withTimingsOf(reported, current);
      if (refreshed === current) return;
      link.record.replicas[index] = refreshed;
      this.#upsert(link, refreshed);
      if (this.#roster.isCurrent(link)) this.#options.onAgentChanged(link, [refreshed]);
      return;
    }
    const state = kept(current, reported);
    if (index < 0) link.record.replicas.push(state);
    else link.record.replicas[index] = state;
    this.#upsert(link, state);
    if (this.#roster.isCurrent(link)) this.#options.onAgentChanged(link, index < 0 ? undefined : [state]);
  }

  /**
   * Routes an ask. One that may pass (a sharded pool's walk, gateway/shard-walk.ts) is answered
   * "passed" instead of waiting for agents, failing for want of one, queueing behind a backlog, or loading
   * a model another shard may hold: the Worker asks the model's next shard, and comes back to the best of
   * those that passed.
   */
  #submit(pending: PendingAsk): void {
    const elsewhere = pending.ask.pass === "never" ? undefined : pending.ask.pass;
    const mayPass = elsewhere !== undefined;
    const routed = this.#dispatcher.submit(pending.route, pending, pending.deadline.at, elsewhere);
    switch (routed.kind) {
      case "dispatched":
        this.#sendAll([routed.dispatch]);
        return;
      case "queued":
        return;
      case "backlogged":
        this.#pass(pending, "backlogged");
        return;
      case "unmatched":
        this.#pass(pending, routed.holds ? "hit" : "cold");
        return;
      case "unavailable":
        if (mayPass) this.#pass(pending, this.#unavailableReason());
        else if (!this.#waitForAgents(pending)) this.#fail(pending, failureOf(routed.error));
        return;
      case "not_found":
        if (mayPass) this.#pass(pending, "not-served");
        else this.#fail(pending, failureOf(routed.error));
        return;
      case "queue_full":
        this.#fail(pending, failureOf(routed.error));
    }
  }

  /** Why a shard with nothing to serve a request passes it on: agents that cannot take it, coming back, none. */
  #unavailableReason(): PassReason {
    if (this.servingAgents > 0) return "not-served";
    return this.#agentWait.expectedUntil() === undefined ? "no-agents" : "awaited";
  }

  /** The ask goes to the model's next shard: not a request this shard answered, so no metrics count it. */
  #pass(pending: PendingAsk, why: PassReason): void {
    this.#agentWait.delete(pending);
    if (this.#ledger.settle(pending, { ok: "passed", why })) this.#options.onPassed?.(why);
  }

  /** Grants what the dispatcher decided; a grant that cannot be made frees its slot and may dispatch more. */
  #sendAll(dispatches: Dispatch<PendingAsk>[]): void {
    const work = [...dispatches];
    for (let dispatch = work.shift(); dispatch !== undefined; dispatch = work.shift()) {
      if (!this.#grant(dispatch)) work.push(...this.#dispatcher.release(dispatch.address));
    }
  }

  /** False when the slot must be given back: the ask was answered meanwhile, or the agent is gone. */
  #grant(dispatch: Dispatch<PendingAsk>): boolean {
    const pending = dispatch.payload;
    const { agentId, replicaId } = splitReplicaAddress(dispatch.address);
    if (!this.#ledger.isOpen(pending)) return false;
    const link = this.#roster.get(agentId);
    if (link === undefined) {
      this.#submit(pending);
      return false;
    }
    const direct = opensDirectPath({
      policy: this.#dispatcher.policy,
      expect: dispatch.expect,
      request: pending.route,
      replica: this.#dispatcher.replica(dispatch.address),
      waiting: this.#waiting,
    });
    return this.#ledger.grant(
      pending,
      { agentId, replicaId, address: dispatch.address },
      link.record.channel,
      direct,
    );
  }

  /** Asks waiting here: in the dispatcher's queue, or for agents. */
  get #waiting(): number {
    return this.#dispatcher.queueLength + this.#agentWait.size;
  }

  /** The ask's deadline passed while it waited (for agents, or for a slot): 504. */
  #onDeadline(pending: PendingAsk): void {
    const { model } = pending.ask;
    if (this.#agentWait.has(pending)) {
      this.#fail(
        pending,
        failureOf(
          pending.deadline.exceeded(`no agent was connected to serve '${model}', and none came back`),
        ),
      );
      return;
    }
    this.#dispatcher.cancel((queued) => queued === pending);
    this.#fail(pending, failureOf(pending.deadline.exceeded(`no replica for '${model}' became free`)));
  }

  /** The ask ends without a slot: the client gets this failure, and the metrics count it. */
  #fail(pending: PendingAsk, failure: RelayFailure): void {
    this.#agentWait.delete(pending);
    if (!this.#ledger.settle(pending, failure)) return;
    this.#options.onFinished?.({
      model: pending.ask.model,
      status: failure.status,
      totalMs: this.#now() - pending.arrivedAt,
    });
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

/**
 * A replica's state as the registry keeps it: `reported`, with the timings of every model the replica
 * reported figures of since it joined (a report carries only those it holds and those changed lately:
 * ReplicaState.timings). The registry's copy of them is updated in place and shared by the replica's
 * successive states, so taking a report in costs what it carries, not what the replica ever ran (the router's
 * estimates still index the whole copy once per state, when a decision asks: shared/routing/estimates.ts).
 */
function kept(current: ReplicaState | undefined, reported: ReplicaState): ReplicaState {
  if (current === undefined) return reported;
  mergeTimings(current.timings, reported.timings);
  return { ...reported, timings: current.timings };
}

/**
 * `current` with the newer timings of a state that arrived after it though taken before (they are the
 * figures of a model evicted since): a new object, so that what was computed from it (the routing's
 * estimates) is computed again; `current` itself when it brought nothing new.
 */
function withTimingsOf(stale: ReplicaState, current: ReplicaState): ReplicaState {
  return mergeTimings(current.timings, stale.timings) ? { ...current } : current;
}

/** Whether `incoming` is an older snapshot of the replica than `current` (ReplicaState.seq). */
function isStale(current: ReplicaState | undefined, incoming: ReplicaState): boolean {
  return current !== undefined && incoming.seq < current.seq;
}
