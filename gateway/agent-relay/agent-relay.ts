import { DurableObject } from "cloudflare:workers";
import { Deadline } from "../../shared/deadline.ts";
import { SwitchyardError } from "../../shared/errors.ts";
import { errorResponse } from "../../shared/http/error-response.ts";
import { isPoolName } from "../../shared/pool-names.ts";
import { ChannelIdSchema } from "../../shared/protocol/data-channel.ts";
import type { ErrorFrame, ResultHeader } from "../../shared/protocol/frames.ts";
import { HEARTBEAT_PING, HEARTBEAT_PONG } from "../../shared/protocol/heartbeat.ts";
import { gatewayConfig } from "../config.ts";
import { log } from "../log.ts";
import {
  type RegistryCalls,
  type RelayEnv,
  registryName,
  registryStub,
  shardNumbers,
} from "../object-bindings.ts";
import type {
  Decision,
  DirectEntry,
  DirectRefused,
  DirectSettled,
  RelayFailure,
  RunOrder,
  RunOutcome,
  RunResult,
} from "../pool-calls.ts";
import { parseAgentMessage } from "../registry/agent-messages.ts";
import {
  answerClose,
  CLOSE_GOING_AWAY,
  CLOSE_INTERNAL,
  closeSocket,
  ProtocolViolation,
} from "../registry/protocol-violation.ts";
import { ABANDONED_GRACE_MS, RUN_CLAIM_AFTER_MS } from "../registry/request-ledger.ts";
import { DirectAdmission } from "./direct-admission.ts";
import { DirectReports } from "./direct-reports.ts";
import { cancelFrame, inferFrame } from "./outgoing-frames.ts";
import { type Run, RunLedger } from "./run-ledger.ts";
import { outcomeOf, reportOf, UNREACHED } from "./run-outcome.ts";

const DATA_TAG = "data";
/** Kept in the relay's storage once its data socket ended: a channel carries one connection, never two. */
const ENDED_KEY = "ended";

/** What the data socket's attachment keeps: whose relay this is, for reports after a hibernation. */
interface DataAttachment {
  pool: string;
  channel: string;
}

/**
 * One agent's relay: the Durable Object its data socket (`/agent/data`, shared/protocol/data-channel.ts)
 * terminates in. The Worker hands it a request the registry granted a slot for; it sends the infer frame,
 * waits for the agent's result or error frame, answers the Worker, and releases the slot to the registry with
 * the replica's fresh state. It holds only its own agent's requests in flight, so a pool's bytes in flight
 * grow with its agents. It decides nothing: whether a failed run goes elsewhere is the registry's answer to
 * its release (retry-rules.ts), which it passes on to the Worker.
 *
 * A request the Worker sends without a grant (a direct hit, shared/routing/direct-hits.ts) it runs the same
 * way when the registry's last release answer for that model here gave a permit and the agent holds the model
 * with a slot free (direct-admission.ts), and tells the registry in batches (direct-reports.ts: a hit still
 * running within DIRECT_ADOPT_WITHIN_MS, one that ended within DIRECT_REPORT_WITHIN_MS); otherwise it refuses
 * it, and the Worker asks the registry.
 *
 * At a run's deadline it answers 504 and tells the agent to stop; the slot stays taken until the agent
 * answers or the grace runs out. When the agent goes (the socket closes, or the registry says it left), every
 * run it had fails as "may have started", and the registry decides on reruns. The socket hibernates between
 * requests; heartbeats are answered by the runtime.
 */
export class AgentRelay extends DurableObject<RelayEnv> {
  readonly #runs: RunLedger;
  readonly #maxPendingBytes: number;
  readonly #registries = new Map<string, DurableObjectStub<RegistryCalls>>();
  readonly #direct = new DirectAdmission();
  /** Direct hits' reports to their registry, batched (direct-reports.ts), by registry name. */
  readonly #reports = new Map<string, DirectReports>();
  /** Direct hits' adopts, by ticket, until the registry answered: a run's release and claim wait for it. */
  readonly #adopting = new Map<string, Promise<void>>();
  /**
   * This instance woke with the socket already open (after hibernation or an eviction): an answer for a run
   * it never sent may be for one of its previous life, whose grace ran out meanwhile, and is ignored.
   */
  readonly #woke: boolean;

  constructor(ctx: DurableObjectState, env: RelayEnv) {
    super(ctx, env);
    this.#maxPendingBytes = gatewayConfig(env).MAX_PENDING_BYTES;
    this.#woke = ctx.getWebSockets(DATA_TAG).length > 0;
    this.#runs = new RunLedger({
      abandonedGraceMs: ABANDONED_GRACE_MS,
      onDeadline: (run) => this.#timedOut(run),
      onAbandonedExpired: (run) => void this.#report(run, { kind: "freed" }),
      claimAfterMs: RUN_CLAIM_AFTER_MS,
      onStillRunning: (run) => void this.#claimSlot(run),
    });
    ctx.setWebSocketAutoResponse(new WebSocketRequestResponsePair(HEARTBEAT_PING, HEARTBEAT_PONG));
  }

  /** GET /agent/data?channel=..., authenticated by the Worker: the agent's data socket. */
  override async fetch(request: Request): Promise<Response> {
    const url = new URL(request.url);
    const channel = ChannelIdSchema.safeParse(url.searchParams.get("channel"));
    const pool = url.searchParams.get("pool") ?? "";
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return errorResponse(new SwitchyardError("bad_input", "/agent/data expects a websocket upgrade"), {
        Upgrade: "websocket",
      });
    }
    if (!channel.success || !isPoolName(pool)) {
      return errorResponse(new SwitchyardError("bad_input", "/agent/data needs a pool and a channel id"));
    }
    if (this.#socket() !== undefined || this.ctx.storage.kv.get(ENDED_KEY) !== undefined) {
      return errorResponse(
        new SwitchyardError("conflict", "this data channel is or was connected already: use a new one"),
      );
    }
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server, [DATA_TAG]);
    server.serializeAttachment({ pool, channel: channel.data } satisfies DataAttachment);
    return new Response(null, { status: 101, webSocket: client });
  }

  // ---- RPC from the Worker and the registry ----

  /** Runs one granted request at the agent; answers every expected failure as a value. */
  async run(order: RunOrder): Promise<RunOutcome> {
    const now = Date.now();
    return await this.#start(order, Deadline.in(order.timeoutMs, now, order.budgetMs), now);
  }

  /**
   * A request the Worker sends without a grant (a direct hit, shared/routing/direct-hits.ts): run as a
   * granted one when the registry's permit for its model here is fresh, the agent holds the model and the
   * replica has a slot free; the registry is told (`adopt`) as it goes out. Otherwise refused, nothing sent.
   */
  async runDirect(order: RunOrder): Promise<RunOutcome | DirectRefused> {
    const now = Date.now();
    const deadline = Deadline.in(order.timeoutMs, now, order.budgetMs);
    const refusal =
      this.#socket() === undefined
        ? "its agent's data socket is not connected"
        : deadline.passed(now)
          ? "no time left"
          : this.#runs.bytes + order.body.byteLength > this.#maxPendingBytes
            ? "the relay holds its limit of bytes"
            : this.#runs.has(order.ticket)
              ? "a run with this ticket is in flight"
              : this.#direct.refusal(order, this.#runs.modelsAt(order.replicaId), now);
    if (refusal !== undefined) return { kind: "refused", why: refusal };
    const adopted = this.#reportsTo(order.pool, order.shard)
      .adopt({
        ticket: order.ticket,
        agentId: order.agentId,
        channel: order.channel,
        replicaId: order.replicaId,
        model: order.model,
        ...(order.version === undefined ? {} : { version: order.version }),
        ...(order.hint === undefined ? {} : { hint: order.hint }),
        timeoutMs: order.timeoutMs,
      })
      .then((answer) => this.#direct.noteAdopt(order.replicaId, answer));
    this.#adopting.set(order.ticket, adopted);
    try {
      return await this.#start(order, deadline, now);
    } catch (error) {
      // Not sent (a bug's path, as for run()): the Worker releases the ticket; nothing waits for its adopt.
      this.#adopting.delete(order.ticket);
      throw error;
    }
  }

  /** Sends a run (granted, or direct and admitted) to the agent; answers every expected failure as a value. */
  async #start(order: RunOrder, deadline: Deadline, now: number): Promise<RunOutcome> {
    const socket = this.#socket();
    if (socket === undefined) {
      return this.#ended(order, deadline, now, {
        kind: "lost",
        why: "its agent's data socket is not connected",
        started: false,
      });
    }
    if (this.#runs.bytes + order.body.byteLength > this.#maxPendingBytes) {
      return this.#ended(order, deadline, now, {
        kind: "error",
        status: 429,
        message: `the agent's relay holds ${this.#runs.bytes} bytes of requests already (limit ${this.#maxPendingBytes}); retry later`,
        started: false,
        retryAfterSeconds: 1,
      });
    }
    if (deadline.passed(now)) {
      // Granted with nothing left of its deadline (asked again after a failed run): not worth a frame.
      void this.#report({ order, deadline, sentAt: now }, { kind: "expired" });
      return {
        kind: "done",
        outcome: {
          ok: false,
          status: 504,
          code: "deadline_exceeded",
          message: deadline.exceeded(`no replica for '${order.model}' became free`).message,
        },
      };
    }
    if (this.#runs.has(order.ticket)) {
      // The same grant twice would be a bug in the Worker; refusing it keeps the ledger's books straight.
      throw new Error(`run ${order.ticket} is in flight already`);
    }
    const frame = inferFrame(order, deadline.remainingMs(now));
    return new Promise<RunOutcome>((answer) => {
      this.#runs.open({ order, deadline, sentAt: now }, answer);
      try {
        socket.send(frame);
      } catch {
        // The socket closed under us and its close event has not arrived yet: the request never reached
        // the agent, so it can go elsewhere.
        const taken = this.#runs.take(order.ticket);
        if (taken === undefined) return;
        void this.#ended(order, deadline, now, {
          kind: "lost",
          why: "its agent's data socket closed",
          started: false,
        }).then(taken.answer);
      }
    });
  }

  /** The registry took this relay's agent out: its socket closes and its runs fail now. */
  agentGone(why: string): void {
    const socket = this.#socket();
    if (socket !== undefined) closeSocket(socket, CLOSE_GOING_AWAY, why);
    this.#agentEnded(why);
  }

  // ---- the data socket ----

  override async webSocketMessage(socket: WebSocket, message: string | ArrayBuffer): Promise<void> {
    try {
      const parsed = parseAgentMessage(message);
      switch (parsed.kind) {
        case "ping":
          socket.send(HEARTBEAT_PONG);
          return;
        case "pong":
          return;
        case "result":
          await this.#onResult(parsed.header, parsed.body);
          return;
        case "text":
          if (parsed.frame.type !== "error") {
            throw new ProtocolViolation(`${parsed.frame.type} frame on the data socket`);
          }
          await this.#onError(parsed.frame);
      }
    } catch (error) {
      const violation = error instanceof ProtocolViolation;
      const why = violation ? `protocol violation: ${error.message}` : "the relay failed to handle its frame";
      log(violation ? "protocol-violation" : "frame-handling-failed", {
        pool: attachmentOf(socket)?.pool,
        error: String(error),
      });
      closeSocket(socket, violation ? error.closeCode : CLOSE_INTERNAL, why);
      await this.#lost(socket, why);
    }
  }

  override async webSocketClose(socket: WebSocket, code: number, reason: string): Promise<void> {
    answerClose(socket, code, reason);
    await this.#lost(socket, reason === "" ? `closed with code ${code}` : `closed: ${reason}`);
  }

  override async webSocketError(socket: WebSocket, error: unknown): Promise<void> {
    await this.#lost(socket, `connection error: ${String(error)}`);
  }

  // ---- internals ----

  /**
   * The open run an answer belongs to; undefined when nobody waits for it any more (its client had a 504),
   * in which case its slot is freed here with the state the answer carried.
   */
  async #claim(answer: { id: string; replica: string; state?: ResultHeader["state"] }) {
    const claim = this.#runs.claim(answer.id, answer.replica, this.#woke);
    if (claim.kind === "open") return claim;
    if (claim.kind === "abandoned") await this.#report(claim.run, { kind: "freed" }, answer.state);
    return undefined;
  }

  async #onResult(header: ResultHeader, body: Uint8Array): Promise<void> {
    if (header.state !== undefined) this.#direct.noteState(header.state);
    const claim = await this.#claim(header);
    if (claim === undefined) return;
    const { run, answer } = claim;
    const now = Date.now();
    const { order } = run;
    answer({
      kind: "done",
      outcome: {
        ok: true,
        body,
        contentType: header.contentType,
        ...(header.headerLength === undefined ? {} : { headerLength: header.headerLength }),
        replica: order.replica,
        cache: header.cache,
        timings: {
          gatewayQueueMs: order.queuedMs,
          roundTripMs: now - run.sentAt,
          // The Worker puts the whole time in the pool here (asks and runs); the relay knows only its run.
          registryMs: now - run.sentAt,
          ...header.timings,
        },
      },
    });
    // After the Worker has its answer: the slot goes back with the replica's fresh state.
    await this.#report(
      run,
      {
        kind: "ok",
        model: header.model,
        cache: header.cache,
        phases: {
          queueMs: order.queuedMs + header.timings.queueMs,
          loadMs: header.timings.loadMs,
          inferMs: header.timings.inferMs,
        },
      },
      header.state,
    );
  }

  async #onError(frame: ErrorFrame): Promise<void> {
    if (frame.state !== undefined) this.#direct.noteState(frame.state);
    const claim = await this.#claim(frame);
    if (claim === undefined) return;
    const { run, answer } = claim;
    const result: RunResult = {
      kind: "error",
      status: frame.status,
      message: frame.message,
      started: frame.started,
    };
    answer(outcomeOf(run.order, result, await this.#report(run, result, frame.state)));
  }

  /** The deadline passed while the agent had the run: 504 now; the slot stays taken until it answers. */
  #timedOut(run: Run): void {
    const taken = this.#runs.take(run.order.ticket);
    if (taken === undefined) return;
    const { order } = run;
    const failure: RelayFailure = {
      ok: false,
      status: 504,
      code: "deadline_exceeded",
      message: run.deadline.exceeded(`'${order.model}' did not answer`).message,
      replica: order.replica,
    };
    taken.answer({ kind: "done", outcome: failure });
    const socket = this.#socket();
    try {
      socket?.send(cancelFrame(order.ticket));
    } catch {
      // Its close event will follow.
    }
    this.#runs.abandon(run);
    void this.#report(run, { kind: "timed-out" });
  }

  /** The agent is gone: the runs it had may have started there; the registry decides on each. */
  #agentEnded(why: string): void {
    const { open, abandoned } = this.#runs.takeAll();
    for (const { run, answer } of open) {
      const result: RunResult = { kind: "lost", why, started: true };
      void this.#report(run, result).then((decision) => answer(outcomeOf(run.order, result, decision)));
    }
    for (const run of abandoned) void this.#report(run, { kind: "freed" });
  }

  /**
   * The data socket ended or broke the protocol: the registry takes the agent out first (so that the slots
   * its failed runs give back are not granted to it again), then the runs fail.
   */
  async #lost(socket: WebSocket, why: string): Promise<void> {
    const attachment = attachmentOf(socket);
    if (this.ctx.storage.kv.get(ENDED_KEY) === undefined) this.ctx.storage.kv.put(ENDED_KEY, Date.now());
    if (attachment !== undefined) {
      // The relay does not know which of the pool's registry shards its agent joined; only that one acts.
      await Promise.all(
        shardNumbers(gatewayConfig(this.env).REGISTRY_SHARDS).map((shard) =>
          this.#registry(attachment.pool, shard)
            .agentLost(attachment.channel, why)
            .catch((error: unknown) => {
              // The registry finds out on its own: the agent closes its control socket when its data socket ends.
              log("agent-lost-not-told", { pool: attachment.pool, error: String(error) });
            }),
        ),
      );
    }
    this.#agentEnded(why);
  }

  /** A run still going after RUN_CLAIM_AFTER_MS: the registry keeps its slot past the claim window. */
  async #claimSlot(run: Run): Promise<void> {
    try {
      // A direct hit's slot is claimed once the registry has it in its books.
      await this.#adopting.get(run.order.ticket);
      await this.#registry(run.order.pool, run.order.shard).claim(run.order.ticket);
    } catch (error) {
      log("claim-failed", { ticket: run.order.ticket, error: String(error) });
    }
  }

  /** A run that ended before it reached the agent (or could not): its release decides what the Worker does. */
  async #ended(order: RunOrder, deadline: Deadline, now: number, result: RunResult): Promise<RunOutcome> {
    const run: Run = { order, deadline, sentAt: now };
    return outcomeOf(order, result, await this.#report(run, result));
  }

  /**
   * Releases the run's slot to the registry, with the replica's state, and returns its decision. A registry
   * that fails (a deploy, a restart) is asked once more; if it fails again, a failed run is not retried.
   */
  async #report(run: Run, result: RunResult, state?: ResultHeader["state"]): Promise<Decision> {
    const { order } = run;
    const now = Date.now();
    const report = reportOf(order, result, {
      deadlinePassed: run.deadline.passed(now),
      totalMs: order.queuedMs + (now - run.sentAt),
      ...(state === undefined ? {} : { state }),
    });
    // A direct hit's slot is taken in the registry's books before it is given back there.
    const adopted = this.#adopting.get(order.ticket);
    if (adopted !== undefined) {
      const reports = this.#reportsTo(order.pool, order.shard);
      // Gone well before its adopt left: both go in one entry of the batch.
      const batched = result.kind === "ok" ? reports.release(report) : undefined;
      if (batched !== undefined) {
        this.#adopting.delete(order.ticket);
        const decision = await batched;
        this.#direct.noteDecision(order, result, decision, Date.now());
        return decision;
      }
      // The Worker waits for a failed run's decision: its adopt goes now, not at the batch's time.
      if (result.kind !== "ok") reports.flush();
      // A timed-out run's `freed` release follows, and waits for the adopt too.
      if (result.kind !== "timed-out") this.#adopting.delete(order.ticket);
      await adopted;
    }
    const decision =
      (await this.#callRegistry(
        order.pool,
        order.shard,
        "release",
        { ticket: order.ticket },
        async (registry): Promise<Decision> => await registry.release(report),
      )) ?? UNREACHED;
    // Unreached, the model's permit here goes too.
    this.#direct.noteDecision(order, result, decision, Date.now());
    return decision;
  }

  /** The batch of direct-hit reports for a registry shard of the pool. */
  #reportsTo(pool: string, shard: number): DirectReports {
    const name = registryName(pool, shard);
    let reports = this.#reports.get(name);
    if (reports === undefined) {
      reports = new DirectReports({ settle: (entries) => this.#settle(pool, shard, entries) });
      this.#reports.set(name, reports);
    }
    return reports;
  }

  /**
   * One batch of direct hits to the registry, asked once more if it fails as a release is. Unanswered, their
   * adopts count as refused (every permit goes) and their releases as unreached: no permit, no retry.
   */
  async #settle(pool: string, shard: number, entries: DirectEntry[]): Promise<DirectSettled[]> {
    const settled = await this.#callRegistry(
      pool,
      shard,
      "settle",
      { pool, shard, entries: entries.length },
      async (registry): Promise<DirectSettled[]> => await registry.settleDirect(entries),
    );
    return (
      settled ??
      entries.map(({ release }) =>
        release === undefined ? { adopt: "refused" } : { adopt: "refused", decision: UNREACHED },
      )
    );
  }

  /**
   * A call to a registry shard of the pool, made once more if it fails (a deploy, a restart); undefined when
   * it failed twice. A stub whose object failed may stay broken: the second try gets a fresh one.
   */
  async #callRegistry<T>(
    pool: string,
    shard: number,
    what: string,
    details: Record<string, unknown>,
    call: (registry: DurableObjectStub<RegistryCalls>) => Promise<T>,
  ): Promise<T | undefined> {
    for (let attempt = 1; attempt <= 2; attempt += 1) {
      try {
        return await call(this.#registry(pool, shard));
      } catch (error) {
        this.#registries.delete(registryName(pool, shard));
        log(`${what}-failed`, { ...details, attempt, error: String(error) });
      }
    }
    return undefined;
  }

  /** A registry shard of the pool, its stub kept between calls (naming an object hashes its name). */
  #registry(pool: string, shard: number): DurableObjectStub<RegistryCalls> {
    const name = registryName(pool, shard);
    let stub = this.#registries.get(name);
    if (stub === undefined) {
      stub = registryStub(this.env.REGISTRY, pool, shard);
      this.#registries.set(name, stub);
    }
    return stub;
  }

  #socket(): WebSocket | undefined {
    return this.ctx
      .getWebSockets(DATA_TAG)
      .find((socket) => socket.readyState === WebSocket.OPEN || socket.readyState === WebSocket.CONNECTING);
  }
}

function attachmentOf(socket: WebSocket | undefined): DataAttachment | undefined {
  const attachment = socket?.deserializeAttachment() as DataAttachment | null | undefined;
  return attachment ?? undefined;
}
