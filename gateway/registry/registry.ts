import { DurableObject } from "cloudflare:workers";
import { SwitchyardError } from "../../shared/errors.ts";
import { errorResponse } from "../../shared/http/error-response.ts";
import type { CatalogEntry } from "../../shared/models/model-catalog.ts";
import type { ModelStatistics } from "../../shared/oip/statistics.ts";
import type { TritonModelConfig } from "../../shared/oip/triton-model-config.ts";
import {
  AGENT_NAME_PARAM,
  AgentNameSchema,
  PROTOCOL_VERSION,
  type Welcome,
} from "../../shared/protocol/frames.ts";
import { HEARTBEAT_PING, HEARTBEAT_PONG, silenceLimitMs } from "../../shared/protocol/heartbeat.ts";
import type { ModelSignature } from "../../shared/protocol/model-signatures.ts";
import { routingPolicy } from "../../shared/routing/policies.ts";
import { gatewayConfig } from "../config.ts";
import { log } from "../log.ts";
import type { PoolCounters } from "../metrics/pool-counters.ts";
import { PoolMetrics } from "../metrics/pool-metrics.ts";
import { listPolicyDefaults } from "../models/model-store.ts";
import { type RegistryEnv, relayStub, SHARD_HEADER } from "../object-bindings.ts";
import type {
  Decision,
  DirectEntry,
  DirectSettled,
  ModelAnswer,
  ModelReadiness,
  PolicyReport,
  PoolSnapshot,
  RunReport,
  ShardPolicy,
  ShardPopulation,
  SlotAnswer,
  SlotAsk,
} from "../pool-calls.ts";
import type { AgentLink } from "./agent-link.ts";
import { parseAgentMessage } from "./agent-messages.ts";
import { AgentOffers } from "./agent-offers.ts";
import { AgentQueries } from "./agent-queries.ts";
import { AgentStore } from "./agent-store.ts";
import { AlarmClock } from "./alarm-clock.ts";
import { Idempotence } from "./idempotence.ts";
import { ModelDirectory } from "./model-directory.ts";
import { ModelPins, PIN_REPLACE_AFTER_MS, PinStore } from "./model-pins.ts";
import { PoolPresence } from "./pool-presence.ts";
import {
  answerClose,
  CLOSE_GOING_AWAY,
  CLOSE_INTERNAL,
  CLOSE_POLICY_VIOLATION,
  closeSocket,
  ProtocolViolation,
} from "./protocol-violation.ts";
import { Scheduler } from "./scheduler.ts";
import { ServingPolicies } from "./serving-policies.ts";
import { SignatureStore } from "./signature-store.ts";
import { StorageMeter, type StorageWrites } from "./storage-meter.ts";

/** Tag of agent sockets in ctx.getWebSockets(). */
const AGENT_TAG = "agent";
/** Requests look for sockets that never said hello at most this often (see #sweepBeforeRouting). */
const SWEEP_INTERVAL_MS = 1_000;
/** The reason a registry reset by an admin gives (see restart()). */
export const RESTART_REASON = "the registry was restarted by an admin";
/** How long a restart waits for the agents' relays to hear that their agents are gone. */
const RESTART_NOTICE_MS = 2_000;

/**
 * One pool's registry: a Durable Object (SQLite-backed) that agents hold their control websockets to, that
 * the Worker asks over RPC for slots (`reserve`), and that the agents' relays give slots back to
 * (`release`, pool-calls.ts); it never holds a request's bytes. Agents' sockets use the WebSocket Hibernation
 * API, so an idle pool costs nothing: heartbeats ("ping") are answered by the runtime without waking the
 * object, and the object may be evicted from memory while agents stay connected. Whatever the router must
 * know after that is in each socket's attachment (see agent-store.ts); the constructor rebuilds the pool from
 * `ctx.getWebSockets()`. Asks waiting and slots granted are in memory: an ask's pending RPC, and each granted
 * slot's timer (request-ledger.ts), keep the object awake until they end.
 */
export class Registry extends DurableObject<RegistryEnv> {
  readonly #scheduler: Scheduler;
  readonly #idempotence: Idempotence;
  readonly #store: AgentStore;
  readonly #signatures: SignatureStore;
  readonly #heartbeatMs: number;
  readonly #metrics: PoolMetrics;
  readonly #presence: PoolPresence;
  readonly #alarm: AlarmClock;
  readonly #offers: AgentOffers;
  readonly #queries = new AgentQueries();
  readonly #directory: ModelDirectory;
  readonly #pins: ModelPins;
  readonly #serving: ServingPolicies;
  readonly #meter = new StorageMeter();
  /** Relays being told that their agent is gone (restart() waits for them). */
  readonly #relayTold = new Map<string, Promise<void>>();
  /** When a request next looks for sockets without a hello (#sweepBeforeRouting). */
  #nextSweepAt = 0;

  constructor(ctx: DurableObjectState, env: RegistryEnv) {
    super(ctx, env);
    const config = gatewayConfig(env);
    this.#heartbeatMs = Math.round(config.HEARTBEAT_SECONDS * 1000);
    const kv = this.#meter.metered(ctx.storage.kv);
    this.#store = new AgentStore(kv, {
      attachmentWritten: () => this.#meter.count("attachment"),
      // Its record would be lost at the next hibernation: the agent reconnects and says hello again.
      saveFailed: (socket, error) => {
        log("agent-record-not-kept", {
          agent: this.#scheduler.linkOf(socket)?.record.id,
          error: String(error),
        });
        closeSocket(socket, CLOSE_INTERNAL, "its record could not be kept; reconnect");
        this.#gone(socket, this.#scheduler.linkOf(socket), "its record could not be kept");
      },
    });
    this.#signatures = new SignatureStore(kv);
    this.#metrics = new PoolMetrics({ kv });
    this.#presence = new PoolPresence(kv, config.AGENT_GRACE_SECONDS * 1000);
    this.#alarm = new AlarmClock(ctx.storage, log, () => this.#meter.count("alarm"));
    this.#offers = new AgentOffers(kv);
    this.#idempotence = new Idempotence(kv);
    this.#scheduler = new Scheduler({
      policy: routingPolicy(config.ROUTING_POLICY),
      maxQueue: config.QUEUE_LIMIT,
      heartbeatMs: this.#heartbeatMs,
      // Replicas' fresh states come with every result and state frame: they are kept in the socket's
      // attachment a moment later (agent-store.ts), and only they are compared for the metrics' load and
      // unload counts. A change of membership is kept at once.
      onAgentChanged: (link, replicas) => {
        if (replicas === undefined) {
          this.#store.save(link.socket, link.record);
          this.#metrics.agentChanged(link.record);
        } else {
          this.#store.saveSoon(link.socket, link.record);
          for (const replica of replicas) this.#metrics.replicaChanged(link.record.id, replica);
        }
      },
      // However it went (closed, errored, silent, a failed send): its queries fail now, and the copies it held
      // of pinned models are placed again elsewhere unless it is back within the grace.
      onAgentGone: (link, why) => {
        this.#forget(link.socket, link.record.id);
        this.#tellRelay(link.record.id, link.record.channel, why);
        this.#metrics.agentGone(link.record.id);
        this.#queries.agentGone(link.record.id);
        this.#pins.agentLeft(Date.now());
        this.#armAlarm();
      },
      onRetry: () => this.#metrics.retried(),
      onPassed: (why) => this.#metrics.passed(why),
      onDirect: () => this.#metrics.direct(),
      onFinished: (request) => this.#metrics.requestFinished(request),
      lastHeartbeat: (socket) => ctx.getWebSocketAutoResponseTimestamp(socket)?.getTime(),
      log,
      presence: this.#presence,
      idempotence: this.#idempotence,
      servedBy: (agentId) => this.#offers.names(agentId),
      maxCopiesOf: (model) => this.#serving.maxCopies(model, Date.now()),
    });
    const agents = () => this.#scheduler.links();
    this.#directory = new ModelDirectory({
      bucket: env.MODELS,
      signatures: this.#signatures,
      offers: this.#offers,
      agents,
      queries: this.#queries,
      log,
    });
    this.#pins = new ModelPins({
      store: new PinStore(kv),
      directory: this.#directory,
      queries: this.#queries,
      agents,
      applyState: (link, state) => this.#scheduler.replicaReported(link, state),
      graceMs: Math.min(config.AGENT_GRACE_SECONDS * 1000, PIN_REPLACE_AFTER_MS),
      log,
    });
    this.#serving = new ServingPolicies({
      kv,
      pins: this.#pins,
      queries: this.#queries,
      directory: this.#directory,
      agents,
      readDefaults: () => listPolicyDefaults(env.MODELS),
      shards: config.REGISTRY_SHARDS,
      log,
    });
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(HEARTBEAT_PING, HEARTBEAT_PONG));
    this.#rebuild();
    this.#presence.start(this.#scheduler.servingAgents, Date.now());
  }

  // ---- RPC from the Worker ----

  /**
   * Whether a request for the model may run a second time, as far as this shard's agents reported
   * (idempotence.ts): the managed queue asks before it runs again a request that a restart interrupted.
   */
  allowsRerun(model: string, version?: string): boolean {
    return this.#idempotence.allowsRerun(model, version);
  }

  /** A slot for one request (pool-calls.ts); may wait in the queue. Never throws for an expected failure. */
  async reserve(ask: SlotAsk): Promise<SlotAnswer> {
    this.#sweepBeforeRouting();
    const answer = this.#scheduler.reserve(ask);
    this.#armAlarm();
    return await answer;
  }

  /** From an agent's relay (or the Worker, when the relay failed): a run ended; its slot comes back. */
  release(report: RunReport): Decision {
    try {
      return this.#scheduler.release(report);
    } finally {
      this.#armAlarm();
    }
  }

  /**
   * From an agent's relay: direct hits it took (shared/routing/direct-hits.ts), whose slots are taken here,
   * each given back at once when it already succeeded; one call for a batch (agent-relay/direct-reports.ts).
   */
  settleDirect(entries: DirectEntry[]): DirectSettled[] {
    try {
      return entries.map(({ adopt, release }) => {
        const adopted = this.#scheduler.adopt(adopt);
        return release === undefined
          ? { adopt: adopted }
          : { adopt: adopted, decision: this.#scheduler.release(release) };
      });
    } finally {
      this.#armAlarm();
    }
  }

  /** From an agent's relay: a run it has is still running, so its slot is kept (request-ledger.ts). */
  claim(ticket: string): void {
    this.#scheduler.claim(ticket);
  }

  /** From an agent's relay: its data socket ended or broke the protocol, so the agent is taken out. */
  agentLost(channel: string, why: string): void {
    const link = this.#scheduler.links().find((candidate) => candidate.record.channel === channel);
    if (link === undefined) return;
    closeSocket(link.socket, CLOSE_GOING_AWAY, `its data socket ended (${why})`);
    this.#gone(link.socket, link, `its data socket ended: ${why}`);
  }

  /** For placing a joining agent named `name`, when its URL named it (shard-placement.ts). */
  population(name: string | undefined): ShardPopulation {
    const sockets = this.ctx.getWebSockets(AGENT_TAG);
    const awaiting = (socket: WebSocket) => {
      if (this.#scheduler.linkOf(socket) !== undefined) return undefined;
      const restored = this.#store.restore(socket);
      return restored.phase === "awaiting-hello" ? restored.name : undefined;
    };
    return {
      agents: sockets.length,
      awaited: this.#presence.expectedBackUntil(Date.now()) !== undefined,
      named:
        name !== undefined &&
        (this.#scheduler.links().some((link) => link.record.name === name) ||
          sockets.some((socket) => awaiting(socket) === name)),
    };
  }

  snapshot(): PoolSnapshot {
    this.#closeSilentAgents();
    return this.#scheduler.snapshot();
  }

  /** The pool's state and its counters, for /metrics and the dashboard. */
  report(): {
    snapshot: PoolSnapshot;
    counters: PoolCounters;
    storageWrites: StorageWrites;
    policies: PolicyReport[];
  } {
    return {
      snapshot: this.snapshot(),
      counters: this.#metrics.report(),
      storageWrites: this.#meter.writes(),
      policies: this.#serving.reports(),
    };
  }

  // ---- models (the OIP endpoints the gateway answers itself; see model-directory.ts) ----

  /** The repository index: every version the pool knows, with its state. */
  modelIndex(): Promise<ModelAnswer<CatalogEntry[]>> {
    return answer(() => this.#directory.catalog());
  }

  /** A version's signature with every version of the model, for OIP model metadata. */
  modelMetadata(
    name: string,
    version?: string,
  ): Promise<ModelAnswer<{ versions: string[]; signature: ModelSignature }>> {
    return answer(async () => {
      const model = await this.#directory.find(name, version);
      return { versions: model.versions, signature: await this.#directory.signature(model) };
    });
  }

  /** Whether a version is loaded somewhere, or why not; `agents`: connected here (a sharded pool's reason). */
  modelReadiness(name: string, version?: string): Promise<ModelAnswer<ModelReadiness>> {
    return answer(async () => {
      const model = await this.#directory.find(name, version);
      const agents = this.#scheduler.links().length;
      return { version: model.version, agents, ...this.#directory.readiness(model) };
    });
  }

  modelConfig(name: string, version?: string): Promise<ModelAnswer<TritonModelConfig>> {
    return answer(async () => this.#directory.config(await this.#directory.find(name, version)));
  }

  /** Inference statistics summed over the serving agents (all models, one model, or one version). */
  modelStatistics(name?: string, version?: string): Promise<ModelAnswer<ModelStatistics[]>> {
    return answer(async () => {
      if (name !== undefined) await this.#directory.find(name, version);
      return this.#directory.statistics(name, version);
    });
  }

  /** Model control: pins `copies` of the version (the highest unless named) and waits until they are loaded. */
  loadModel(
    name: string,
    version: string | undefined,
    copies: number,
  ): Promise<ModelAnswer<Record<string, never>>> {
    return answer(async () => {
      await this.#serving.setMinCopies(name, version, copies);
      return {};
    });
  }

  /** The model's serving policy here: its pin's copies (min_copies), its max_copies, and its copies now. */
  modelPolicy(name: string): Promise<ModelAnswer<ShardPolicy>> {
    return answer(() => this.#serving.view(name));
  }

  /** Sets the model's max_copies (null: no cap, whatever config.json says): its next request is routed under it. */
  setMaxCopies(name: string, maxCopies: number | null): Promise<ModelAnswer<Record<string, never>>> {
    return answer(async () => {
      await this.#serving.setMaxCopies(name, maxCopies);
      return {};
    });
  }

  /** Sets how long idle copies of the model stay loaded on this registry's agents (null: their own). */
  setKeepAlive(name: string, keepAliveMs: number | null): Promise<ModelAnswer<Record<string, never>>> {
    return answer(async () => {
      await this.#serving.setKeepAlive(name, keepAliveMs);
      return {};
    });
  }

  /** Drops the model's pin here and keeps it so (min_copies 0); its copies stay loaded until evicted. */
  unpinModel(name: string): Promise<ModelAnswer<Record<string, never>>> {
    return answer(async () => {
      await this.#serving.setMinCopies(name, undefined, 0);
      return {};
    });
  }

  /** Drops the admin's overrides of the model's policy: its config.json's applies again. */
  clearModelPolicy(name: string): Promise<ModelAnswer<Record<string, never>>> {
    return answer(async () => {
      await this.#serving.clear(name);
      return {};
    });
  }

  /** Model control: drops the model's pin and unloads it from every agent. */
  unloadModel(name: string): Promise<ModelAnswer<Record<string, never>>> {
    return answer(async () => {
      // A model that left the repository can still be pinned or loaded somewhere: unloading it must work.
      const missing = await this.#directory.find(name, undefined).then(
        () => undefined,
        (error: unknown) => error,
      );
      // Kept unloaded over config.json's min_copies; before the unload, so that no policy pass re-pins it.
      if (missing === undefined) this.#serving.unloading(name);
      const unloaded = await this.#pins.unload(name);
      if (missing !== undefined && !unloaded) throw missing;
      return {};
    });
  }

  /**
   * Resets this registry as a crash or a deploy would (POST /admin/pools/{pool}/restart): its memory goes,
   * every agent's socket drops, asks in flight fail (the Worker asks again). Before it goes, it takes every
   * agent out as if it had left, telling each agent's relay, so the runs in flight there fail now as "may
   * have started" and are run again or refused under the rules (a crash tells nobody: the agents close their
   * data sockets when their control sockets drop). Agents dial back in; meanwhile requests wait for them
   * (pool-presence.ts). Never returns: the caller sees an error carrying RESTART_REASON.
   */
  async restart(): Promise<void> {
    log("registry-restart", {});
    const told = this.#scheduler.links().map((link) => {
      closeSocket(link.socket, CLOSE_GOING_AWAY, RESTART_REASON);
      this.#scheduler.disconnect(link, RESTART_REASON);
      return this.#relayTold.get(link.record.channel);
    });
    await Promise.race([
      Promise.allSettled(told),
      new Promise((resolve) => setTimeout(resolve, RESTART_NOTICE_MS)),
    ]);
    this.ctx.abort(RESTART_REASON);
  }

  /**
   * The alarm: agents that went silent while requests are in flight are closed now (their requests are
   * retried or failed, not left to their deadlines), and the queue is offered free slots when the routing
   * policy's bounded wait ends. It is armed only while there is such work, so an idle pool sleeps.
   */
  override async alarm(): Promise<void> {
    this.#alarm.fired();
    this.#closeSilentAgents();
    this.#scheduler.tick();
    this.#pins.due(Date.now());
    this.#armAlarm();
  }

  // ---- agents ----

  /** GET /agent/connect?agent=<name>, already authenticated by the Worker: accept the agent's websocket. */
  override async fetch(request: Request): Promise<Response> {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return errorResponse(new SwitchyardError("bad_input", "/agent/connect expects a websocket upgrade"), {
        Upgrade: "websocket",
      });
    }
    const given = new URL(request.url).searchParams.get(AGENT_NAME_PARAM);
    const name = given === null ? undefined : AgentNameSchema.safeParse(given);
    if (name !== undefined && !name.success)
      return errorResponse(new SwitchyardError("bad_input", `invalid ?${AGENT_NAME_PARAM}=`));
    // The Worker says which shard of the pool this is (config.json's pins are the home shard's).
    const shard = Number(request.headers.get(SHARD_HEADER) ?? Number.NaN);
    if (Number.isInteger(shard) && shard >= 0) this.#serving.placedIn(shard);
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server, [AGENT_TAG]);
    this.#store.markAwaitingHello(server, Date.now(), name?.data);
    return new Response(null, { status: 101, webSocket: client });
  }

  override async webSocketMessage(socket: WebSocket, message: string | ArrayBuffer): Promise<void> {
    let link = this.#scheduler.linkOf(socket);
    try {
      const parsed = parseAgentMessage(message);
      if (link !== undefined) this.#scheduler.touch(link);
      switch (parsed.kind) {
        case "ping":
          // Normally answered by the runtime; this only runs if the auto-response was bypassed.
          socket.send(HEARTBEAT_PONG);
          return;
        case "pong":
          return;
        case "result":
          throw new ProtocolViolation("result frame on the control socket (results go on the data socket)");
        case "text":
          break;
      }
      const frame = parsed.frame;
      if (frame.type === "hello") {
        const { repository } = frame;
        const connecting = this.#store.restore(socket);
        const named = connecting.phase === "awaiting-hello" ? connecting.name : undefined;
        if (named !== undefined && named !== frame.agent.name)
          throw new ProtocolViolation(
            `hello names another agent than its connection's ?${AGENT_NAME_PARAM}=`,
          );
        link = this.#scheduler.register(socket, frame, (agentId) => {
          // Before anything is routed to it: which models it can load decides what it is offered.
          if (repository.kind === "own") this.#offers.save(agentId, repository.models);
        });
        this.#metrics.agentConnected();
        this.#signatures.save(frame.signatures);
        const welcome: Welcome = {
          type: "welcome",
          protocol: PROTOCOL_VERSION,
          agentId: link.record.id,
          heartbeatMs: this.#heartbeatMs,
        };
        socket.send(JSON.stringify(welcome));
        this.#pins.reconcile();
        this.#serving.joined(link);
        return;
      }
      const known = requireHello(link, frame.type);
      if (frame.type === "state") {
        this.#signatures.save(frame.signatures);
        this.#scheduler.updateState(known, frame.replicas);
      } else if (frame.type === "error")
        throw new ProtocolViolation("error frame on the control socket (answers go on the data socket)");
      else if (frame.type === "answer") this.#queries.onAnswer(known, frame);
      else {
        this.#scheduler.drain(known);
        this.#pins.reconcile();
      }
    } catch (error) {
      if (error instanceof ProtocolViolation) {
        log("protocol-violation", { agent: link?.record.id, problem: error.message });
        closeSocket(socket, error.closeCode, error.message);
        this.#gone(socket, link, `protocol violation: ${error.message}`);
        return;
      }
      // A bug while handling this agent's frame: drop this agent (its requests fail cleanly) rather than
      // let one frame take the whole pool's registry down.
      log("frame-handling-failed", { agent: link?.record.id, error: String(error) });
      closeSocket(socket, CLOSE_INTERNAL, "internal error");
      this.#gone(socket, link, "the registry failed to handle its frame");
    } finally {
      // A frame can start work (a retry, a dispatch from the queue) that the alarm must watch over.
      this.#armAlarm();
    }
  }

  override async webSocketClose(socket: WebSocket, code: number, reason: string): Promise<void> {
    const link = this.#scheduler.linkOf(socket);
    this.#gone(socket, link, reason === "" ? `closed with code ${code}` : `closed: ${reason}`);
    answerClose(socket, code, reason);
  }

  override async webSocketError(socket: WebSocket, error: unknown): Promise<void> {
    log("agent-socket-error", { agent: this.#scheduler.linkOf(socket)?.record.id, error: String(error) });
    this.#gone(socket, this.#scheduler.linkOf(socket), "connection error");
  }

  // ---- internals ----

  /** After hibernation or eviction: every socket that said hello is an agent again. */
  #rebuild(): void {
    for (const socket of this.ctx.getWebSockets(AGENT_TAG)) {
      if (socket.readyState !== WebSocket.OPEN) continue;
      const restored = this.#store.restore(socket);
      if (restored.phase === "agent") this.#scheduler.restore(socket, restored.record);
      else if (restored.phase === "lost") {
        log("agent-lost", { reason: restored.reason });
        closeSocket(socket, CLOSE_INTERNAL, `${restored.reason}; reconnect`);
      }
    }
  }

  /**
   * Agents whose heartbeats stopped, and sockets that never said hello, are closed before routing: a host
   * that vanished without a close leaves a half-open socket that would swallow requests until their
   * deadlines.
   */
  #closeSilentAgents(): void {
    this.#closeAgentsGoneSilent();
    this.#closeSocketsWithoutHello();
  }

  #closeAgentsGoneSilent(): void {
    for (const link of this.#scheduler.staleAgents()) {
      closeSocket(link.socket, CLOSE_GOING_AWAY, "heartbeat missed");
      this.#scheduler.disconnect(link, "its heartbeats stopped");
    }
  }

  /** Sockets accepted longer than the silence limit ago that never said hello. */
  #closeSocketsWithoutHello(): void {
    const helloBy = Date.now() - silenceLimitMs(this.#heartbeatMs);
    for (const socket of this.ctx.getWebSockets(AGENT_TAG)) {
      if (this.#scheduler.linkOf(socket) !== undefined) continue;
      const restored = this.#store.restore(socket);
      if (restored.phase === "awaiting-hello" && restored.connectedAt < helloBy) {
        closeSocket(socket, CLOSE_POLICY_VIOLATION, "no hello");
        this.#forget(socket, undefined);
      }
    }
  }

  /**
   * Before routing, silent agents are closed (cheap while nobody is due to fall silent, see
   * AgentRoster.silent). Sockets without a hello are looked for at most every SWEEP_INTERVAL_MS (or a quarter
   * heartbeat, when shorter): that visits every socket, which per request would make each request's cost grow
   * with the pool, and such a socket takes no requests meanwhile.
   */
  #sweepBeforeRouting(): void {
    this.#closeAgentsGoneSilent();
    const now = Date.now();
    if (now < this.#nextSweepAt) return;
    this.#nextSweepAt = now + Math.min(SWEEP_INTERVAL_MS, this.#heartbeatMs / 4);
    this.#closeSocketsWithoutHello();
  }

  #gone(socket: WebSocket, link: AgentLink | undefined, why: string): void {
    if (link !== undefined) this.#scheduler.disconnect(link, why);
    else this.#forget(socket, undefined);
    this.#armAlarm();
  }

  #armAlarm(): void {
    const times = [this.#scheduler.nextAlarmAt(), this.#pins.dueAt()].filter((at) => at !== undefined);
    if (times.length > 0) this.#alarm.armBy(Math.min(...times));
  }

  /** The agent's relay fails the runs it still has there (their releases decide on reruns). */
  #tellRelay(agentId: string, channel: string, why: string): void {
    // Logs name the agent, never its channel (the channel names its relay).
    const told = relayStub(this.env.AGENT_RELAY, channel)
      .agentGone(why)
      .catch((error: unknown) => log("relay-not-told", { agent: agentId, error: String(error) }))
      .finally(() => this.#relayTold.delete(channel));
    this.#relayTold.set(channel, told);
  }

  #forget(socket: WebSocket, agentId: string | undefined): void {
    this.#store.forget(socket, agentId);
    if (agentId !== undefined) this.#offers.forget(agentId);
    try {
      // A closing socket can still be listed by getWebSockets(); without its record it is not rebuilt.
      socket.serializeAttachment(null);
      this.#meter.count("attachment");
    } catch {
      // Already closed: nothing to clear.
    }
  }
}

/** Runs a model call, its expected failures as values: a SwitchyardError thrown across RPC loses its code. */
async function answer<T>(work: () => Promise<T>): Promise<ModelAnswer<T>> {
  try {
    return { ok: true, value: await work() };
  } catch (error) {
    const failure = SwitchyardError.from(error);
    if (failure.status === 500 && failure.code === "internal")
      log("model-call-failed", { error: String(error) });
    return {
      ok: false,
      status: failure.status,
      message: failure.message,
      ...(failure.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: failure.retryAfterSeconds }),
    };
  }
}

function requireHello(link: AgentLink | undefined, what: string): AgentLink {
  if (link === undefined) throw new ProtocolViolation(`${what} frame before hello`);
  return link;
}
