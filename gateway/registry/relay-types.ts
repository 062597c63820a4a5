import type { ErrorCode } from "../../shared/errors.ts";
import type { AgentRecord } from "./agent-link.ts";

/**
 * What the Worker hands the Registry over RPC for one inference, and what comes back. Plain data only:
 * RPC clones arguments and results, and a thrown SwitchyardError would lose its code on the way, so a
 * failure travels as a value too.
 */
export interface RelayedRequest {
  model: string;
  version?: string;
  hint?: string;
  /** The client's OIP request body exactly as received; the agent decodes it again. */
  body: Uint8Array;
  /** Inference-Header-Content-Length of the body, when it carries binary tensors. */
  headerLength?: number;
  /** What is left of the request's deadline when the Worker hands it over. */
  timeoutMs: number;
  /** The whole deadline its client gave it, for the messages of a 504. */
  budgetMs: number;
  /** The client's request id (X-Request-Id), passed to the agent for its logs. */
  requestId?: string;
  /**
   * The Worker sends it a second time because the registry failed (reset, restarted) while it was in
   * flight: it may have run already, so it runs again only when its model is idempotent, and not a third time.
   */
  maybeStarted?: boolean;
}

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
}

export type RelayOutcome = RelaySuccess | RelayFailure;

/** What the registry knows about the pool, for health and model endpoints. */
export interface PoolSnapshot {
  agents: AgentSnapshot[];
  queued: number;
}

/** An agent's record as the registry keeps it, with the requests in flight at each of its replicas. */
export interface AgentSnapshot extends AgentRecord {
  /** Requests the registry has sent there and not yet seen answered, per replica id. */
  inFlight: Record<string, number>;
}

/**
 * A model call's answer over RPC (metadata, readiness, configuration, statistics, model control): a value,
 * or the failure as plain data, since a SwitchyardError thrown across RPC loses its code.
 */
export type ModelAnswer<T> =
  | { ok: true; value: T }
  | { ok: false; status: number; message: string; retryAfterSeconds?: number };
