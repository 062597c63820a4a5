import type { ErrorCode } from "../shared/errors.ts";
import type { ReplicaState } from "../shared/protocol/replica-state.ts";
import type { DirectPermit } from "../shared/routing/direct-hits.ts";
import type { Elsewhere } from "../shared/routing/dispatcher.ts";
import type { AgentRecord } from "./registry/agent-link.ts";

/**
 * What crosses between the Worker and a pool's Durable Objects for one inference. Plain data only: RPC clones
 * arguments and results, and a thrown SwitchyardError would lose its code on the way, so a failure travels
 * as a value too.
 *
 *   Worker   --reserve(SlotAsk)-->  registry       a slot on a replica (may wait in the queue); no bytes
 *   Worker   --run(RunOrder)----->  agent relay    the body to that replica's agent, its answer back
 *   relay    --release(RunReport)-> registry       the slot back with the replica's fresh state; for a run
 *                                                   that failed, the registry's Decision: again, or not;
 *                                                   for one that succeeded, perhaps a direct-hit permit
 *
 * A hit for a model whose last request went well and without waiting skips the first call (direct hits,
 * shared/routing/direct-hits.ts): the Worker sends it straight to that replica's relay, which admits it
 * under the registry's permit and tells the registry in batches (agent-relay/direct-reports.ts: each hit's
 * slot to take, and to give back when it ended well by then), or refuses it, and the Worker asks as above.
 *
 *   Worker   --runDirect(RunOrder)-------->  agent relay   admitted: as run; refused: DirectRefused, nothing taken
 *   relay    --settleDirect(DirectEntry[])->  registry      the slots it took (and gave back), in its books
 *
 * The registry decides (slots, queue, retry rules and budget, idempotence, ejection) and never sees a
 * payload byte; each agent's relay holds only its own agent's requests in flight. A pool with several
 * registry shards (REGISTRY_SHARDS) asks them in the model's order (shared/routing/shard-order.ts): a shard
 * that may pass the ask on does so when it has no agent for the model or is backlogged (Passed).
 */

/** One inference as the Worker read it from its client. */
export interface RelayedRequest {
  model: string;
  version?: string;
  hint?: string;
  /** The client's OIP request body exactly as received; the agent decodes it again. */
  body: Uint8Array;
  /** Inference-Header-Content-Length of the body, when it carries binary tensors. */
  headerLength?: number;
  /** What is left of the request's deadline when the Worker reads it. */
  timeoutMs: number;
  /** The whole deadline its client gave it, for the messages of a 504. */
  budgetMs: number;
  /** The client's request id (X-Request-Id), passed to the agent for its logs. */
  requestId?: string;
}

/** How often a request was tried, as the retry rules (registry/retry-rules.ts) count. */
export interface Tries {
  /** Replicas it was granted that never started it. */
  attempts: number;
  /** Times it was run again after an agent died while it may have been running. */
  reruns: number;
}

/** Worker -> registry: a slot for a request, without its body. */
export interface SlotAsk extends Tries {
  model: string;
  version?: string;
  hint?: string;
  /** It yields to requests without the flag while it waits (shared/routing/types.ts RouteRequest). */
  background?: true;
  /** Replicas it was granted before and failed on: it goes elsewhere when it can (RouteRequest.avoid). */
  avoid?: string[];
  /** What is left of the request's deadline. */
  timeoutMs: number;
  budgetMs: number;
  /**
   * When the shard asked may pass the ask on (shard-walk.ts) rather than serve it: "never" in a pool of one
   * shard and for the ask a walk settles with (to the best shard that passed, which may be asked again),
   * which then answers as the one registry of an unsharded pool;
   * otherwise when it has no agent for it or is backlogged, and when it holds no copy of the model (or no
   * replica advertising its hint) while another shard may (shared/routing/dispatcher.ts, Elsewhere).
   */
  pass: "never" | Elsewhere;
}

/**
 * Why a shard passed an ask on, best place to come back to first: it holds the model but no replica
 * advertises the hint; it could load the model (cold); it holds it but is backlogged (its queue already a
 * few rounds of its slots deep; a cold shard ranks first so that a hot model spills); its agents left and
 * are expected back; it has agents but none can load the model; it has no agent at all.
 */
export const PASS_REASONS = ["hit", "cold", "backlogged", "awaited", "not-served", "no-agents"] as const;
export type PassReason = (typeof PASS_REASONS)[number];

/** A shard's answer when it may pass an ask on and does: the Worker asks the model's next shard. */
export interface Passed {
  ok: "passed";
  why: PassReason;
}

/** A slot on one replica, held until the relay releases it (or the registry's safety timer runs out). */
export interface Grant {
  /** The request's id in the pool: the infer frame's id, and the key its release names. */
  ticket: string;
  agentId: string;
  replicaId: string;
  /** "<agent>/<replica id>". */
  replica: string;
  /** The agent's data channel: its relay's name (shared/protocol/data-channel.ts). */
  channel: string;
  /** Milliseconds the ask waited in the registry (its queue, or for agents). */
  queuedMs: number;
  /**
   * The registry would let this model's next hits go to this replica directly (shared/routing/direct-hits.ts):
   * a hit under a policy that takes direct hits, on a replica matching the request's hint, with nothing
   * left waiting. The Worker remembers the replica only then.
   */
  direct?: true;
}

export type SlotAnswer = { ok: true; grant: Grant } | RelayFailure | Passed;

/** Worker -> agent relay: run the request (as its client sent it) on the granted replica. */
export interface RunOrder extends Tries, RelayedRequest {
  /** The pool and registry shard that granted it, which the relay releases it to. */
  pool: string;
  shard: number;
  ticket: string;
  agentId: string;
  channel: string;
  replicaId: string;
  replica: string;
  /** Milliseconds spent in reserve calls so far (the metrics' queue phase). */
  queuedMs: number;
}

/** The run's end as the Worker sees it: an outcome for the client, or the registry's word to ask again. */
export type RunOutcome = { kind: "done"; outcome: RelayOutcome } | ({ kind: "again" } & Tries);

/** A direct hit the relay would not take (no fresh permit, model not loaded, no free slot): nothing was sent. */
export interface DirectRefused {
  kind: "refused";
  why: string;
}

/**
 * The registry's answer to `adopt`: the slot is taken (`over`: and the replica now holds more than its
 * capacity in the registry's books, grants still on their way to the relay having raced with direct hits, so
 * the relay takes no more direct hits there until a release renews its permit), or it is not (`refused`: the registry does not know
 * the agent as it is, or it drains; the relay drops every permit).
 */
export type AdoptAnswer = "taken" | "over" | "refused";

/** Relay -> registry: a direct hit it admitted and sent, whose slot the registry takes in its books. */
export type DirectRun = Pick<
  RunOrder,
  "ticket" | "agentId" | "channel" | "replicaId" | "model" | "version" | "hint" | "timeoutMs"
>;

/**
 * Relay -> registry (`settleDirect`, batched: agent-relay/direct-reports.ts): a direct hit to adopt, with its
 * release when it succeeded before the batch left.
 */
export interface DirectEntry {
  adopt: DirectRun;
  release?: RunReport;
}

/** The registry's answer to one DirectEntry: its adopt's, and its release's decision when it had one. */
export interface DirectSettled {
  adopt: AdoptAnswer;
  decision?: Decision;
}

/** How a run ended, for the registry. */
export type RunResult =
  /** Answered; the client got it. */
  | {
      kind: "ok";
      /** The version that ran (the outlier ejection's key). */
      model: { name: string; version: string };
      cache: "hit" | "miss";
      phases: { queueMs: number; loadMs: number; inferMs: number };
    }
  /** The agent answered with an error (`started`: false when its replica never began on it). */
  | { kind: "error"; status: number; message: string; started: boolean; retryAfterSeconds?: number }
  /** No answer will come: the agent left, or the run never reached it (`started` false). */
  | { kind: "lost"; why: string; started: boolean }
  /** The deadline passed while it ran: the client got 504; the slot stays taken until `freed`. */
  | { kind: "timed-out" }
  /** A timed-out run's agent answered (or its grace ran out): its slot is free. */
  | { kind: "freed" }
  /** Its deadline had passed when the relay got it: never sent; the client got 504, and the slot is free. */
  | { kind: "expired" };

/** Relay -> registry (and Worker -> registry when the relay itself failed). */
export interface RunReport extends Tries {
  ticket: string;
  /** The relay's channel: a report about an agent that reconnected since under the same id changes nothing there. */
  channel: string;
  agentId: string;
  replicaId: string;
  replica: string;
  model: string;
  version?: string;
  /** Whether the request's deadline had passed when the run ended. */
  deadlinePassed: boolean;
  /** Milliseconds from the first ask to now, for the metrics. */
  totalMs: number;
  /** The replica's state right after the run, when the agent sent it. */
  state?: ReplicaState;
  result: RunResult;
}

/**
 * The registry's answer to a released run: for one that failed, ask again (a retry or a rerun), or not, and
 * why not; for one that succeeded, a permit for direct hits of its model on its replica while nothing waits.
 */
export type Decision = ({ again: true } & Tries) | { again: false; refusal?: string; direct?: DirectPermit };

export interface RelaySuccess {
  ok: true;
  /** The OIP response body exactly as the agent produced it. */
  body: Uint8Array;
  contentType: string;
  headerLength?: number;
  /** "<agent>/<replica id>" that served it. */
  replica: string;
  cache: "hit" | "miss";
  /**
   * Milliseconds: waiting in the registry's queue, from sending the infer frame to receiving the result
   * (the agent's whole share, network included), the whole time in the registry, and the agent's own
   * queue, load, inference and total times (the last where the agent sends it).
   */
  timings: {
    gatewayQueueMs: number;
    roundTripMs: number;
    registryMs: number;
    queueMs: number;
    loadMs: number;
    inferMs: number;
    agentMs?: number | undefined;
  };
}

export interface RelayFailure {
  ok: false;
  /** HTTP status for the client (an agent may report any 4xx/5xx). */
  status: number;
  message: string;
  code?: ErrorCode;
  retryAfterSeconds?: number;
  /** Set when an agent produced the failure. */
  replica?: string;
  /** Set when it may have run on an agent (it must not simply be sent again; the managed queue defers only the others). */
  started?: boolean;
}

export type RelayOutcome = RelaySuccess | RelayFailure;

/** How many agents a registry shard has, for placing a joining agent (pool-shards.ts). */
export interface ShardPopulation {
  /** Agent sockets it holds, those still to say hello included. */
  agents: number;
  /** It has no serving agent now, and its agents are expected back (within AGENT_GRACE_SECONDS). */
  awaited: boolean;
  /** It has an agent of the name asked about (connected, or connecting and not yet said hello). */
  named: boolean;
}

/** What the registry knows about the pool, for health and model endpoints. */
export interface PoolSnapshot {
  agents: AgentSnapshot[];
  queued: number;
}

/** The pool over its registry shards, as the Worker puts it together (pool-shards.ts). */
export interface PoolState extends PoolSnapshot {
  /** REGISTRY_SHARDS. */
  shards: number;
  /** Each agent with the shard it joined. */
  agents: Array<AgentSnapshot & { shard: number }>;
}

/** An agent's record as the registry keeps it, with the requests in flight at each of its replicas. */
export interface AgentSnapshot extends Omit<AgentRecord, "channel"> {
  /** Requests the registry has sent there and not yet seen answered, per replica id. */
  inFlight: Record<string, number>;
}

/** A model version's readiness in one registry shard, and how many agents it has (pool-models.ts). */
export interface ModelReadiness {
  version: string;
  ready: boolean;
  reason: string;
  agents: number;
}

/** A model with a serving policy in a shard, for /metrics and the dashboard: its pin's copies and its cap. */
export interface PolicyReport {
  model: string;
  minCopies: number;
  maxCopies: number | null;
}

/** A model's serving policy as one registry shard holds it (routes/admin-policies.ts). */
export interface ShardPolicy {
  /** Copies its pin keeps loaded (OIP load's copies; 0: none). */
  minCopies: number;
  /** Replicas that may hold it at once; null: no cap. */
  maxCopies: number | null;
  /** Replicas holding it loaded now. */
  copies: number;
  /** What the model's config.json sets (null: nothing), which an override replaces. */
  defaults: { minCopies: number | null; maxCopies: number | null };
  /** The keep-alive the admin set (seconds), over config.json's keep_alive_s and the agents' --keep-alive. */
  keepAliveS: number | null;
}

/**
 * A model call's answer over RPC (metadata, readiness, configuration, statistics, model control): a value,
 * or the failure as plain data, since a SwitchyardError thrown across RPC loses its code.
 */
export type ModelAnswer<T> =
  | { ok: true; value: T }
  | { ok: false; status: number; message: string; retryAfterSeconds?: number };
