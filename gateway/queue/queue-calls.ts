import type { CancelAnswer, QueueStatus } from "../../shared/queue/queue-status.ts";

/**
 * What crosses between the Worker and a pool's managed queue (request-queue.ts): plain data, as RPC clones
 * it. The Worker sees the queue through QueueCalls (object-bindings.ts), not its class, so that the Worker's
 * bindings never import the object.
 */

/** A submit as the Worker read and checked it; a body above INLINE_BYTES is already in R2 under `bodyKey`. */
export interface QueueSubmit {
  id: string;
  pool: string;
  owner: string;
  model: string;
  version?: string;
  hint?: string;
  headerLength?: number;
  body?: Uint8Array;
  bodyKey?: string;
  bodyBytes: number;
  /** The client's X-Request-Timeout, as a deadline to start (ms); absent: QUEUE_START_TIMEOUT_SECONDS. */
  startWithinMs?: number;
  /** Its result's URL, for its webhook to name. */
  responseUrl: string;
  /** Where to POST when it finished (checked: webhooks.ts). */
  webhook?: string;
}

export type SubmitAnswer = { ok: true; status: QueueStatus } | { ok: false; status: 429; message: string };

/** A request as one API key may see it: missing (never, or not its own), expired (410), or found. */
export type Lookup<T> =
  | { kind: "missing" }
  | { kind: "expired"; expiredAt: number }
  | ({ kind: "found" } & T);

/** A finished request's stored answer: what POST .../infer answered, status, headers and body. */
export interface StoredResult {
  status: number;
  headers: [string, string][];
  body?: Uint8Array;
  /** The body is in R2 under this key. */
  bodyKey?: string;
}

/**
 * What happened to a pool's queued requests since the queue began (counters for /metrics): submitted;
 * started (each hand-over to the pool); deferred (the pool could not take it yet, back in the queue);
 * rerun (run again after a restart interrupted it); how they ended; and their webhooks: delivered, a failed
 * delivery to be tried again, or given up.
 */
export const QUEUE_EVENTS = [
  "submitted",
  "started",
  "deferred",
  "rerun",
  "completed",
  "failed",
  "cancelled",
  "timed_out",
  "webhook_delivered",
  "webhook_retried",
  "webhook_failed",
] as const;
export type QueueEvent = (typeof QUEUE_EVENTS)[number];

export interface QueueReport {
  /** Requests waiting to start, per model. */
  waiting: Record<string, number>;
  /** Requests handed to the pool and not answered yet. */
  running: number;
  events: Record<QueueEvent, number>;
}

export type ResultLookup = Lookup<{ queue: QueueStatus; result?: StoredResult }>;

/** Where a queued request's body is kept in R2 when it is too large for the queue's own storage. */
export const queueBodyKey = (pool: string, id: string) => `queue/${pool}/${id}/body`;

export type CancelLookup = Lookup<{ answer: CancelAnswer; queue: QueueStatus }>;
