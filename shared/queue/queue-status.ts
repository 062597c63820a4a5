import { DEFAULT_POOL } from "../pool-names.ts";

/**
 * The managed queue's states and what a client reads of a request (fal's queue API, in OIP's snake_case).
 * A request is IN_QUEUE until the queue hands it to its pool, IN_PROGRESS while it runs there, and ends in
 * one of the four others: COMPLETED (the model answered), FAILED (the pool answered with an error, kept
 * as the result), CANCELLED (its client cancelled it) or TIMED_OUT (it did not start before its deadline).
 */
export const QUEUE_STATES = [
  "IN_QUEUE",
  "IN_PROGRESS",
  "COMPLETED",
  "FAILED",
  "CANCELLED",
  "TIMED_OUT",
] as const;
export type QueueState = (typeof QUEUE_STATES)[number];

const FINISHED = new Set<QueueState>(["COMPLETED", "FAILED", "CANCELLED", "TIMED_OUT"]);

export const isFinished = (state: QueueState): boolean => FINISHED.has(state);

/** A request as its status endpoint shows it (the Worker adds the URLs). Times are ISO 8601. */
export interface QueueStatus {
  request_id: string;
  status: QueueState;
  model: string;
  version?: string;
  /** IN_QUEUE: how many of the pool's queued requests go before it. */
  queue_position?: number;
  /** IN_QUEUE: when it is expected to start, from the queue's recent run times; absent before any ran. */
  estimated_start_at?: string;
  submitted_at: string;
  started_at?: string;
  finished_at?: string;
  /** When its result (or the record that it was cancelled) is dropped; later lookups answer 410. */
  expires_at?: string;
  /** "<agent>/<replica>" it runs on (IN_PROGRESS, once a replica took it) or ran on. */
  replica?: string;
  /** Where its time went so far (from IN_PROGRESS on). */
  timings?: QueueTimings;
  /** COMPLETED and FAILED: the HTTP status its result carries. */
  response_status?: number;
  /** FAILED, CANCELLED and TIMED_OUT: why, in words. */
  error?: string;
  /** Times it was run again after a gateway restart interrupted it (idempotent models only). */
  reruns: number;
}

/**
 * A queued request's time, in milliseconds: in the managed queue, then in its pool before a replica took it
 * (waiting for a slot, a load, agents), then on that replica. While it runs, `run_ms` is the time so far.
 */
export interface QueueTimings {
  /** Submitted until the managed queue handed it to its pool. */
  queued_ms: number;
  /** Handed to the pool until its run went to a replica (its last try's, when it was tried again). */
  pool_ms?: number;
  /** On that replica: until now while IN_PROGRESS, until its answer once finished. */
  run_ms?: number;
}

/**
 * What a status stream compares to decide that a status changed: everything but what moves with the clock
 * alone (the start estimate, the running time), so that a stream sends an event per change, not per look.
 */
export function statusChangeKey(status: QueueStatus): string {
  const { estimated_start_at: _estimate, timings, ...rest } = status;
  return JSON.stringify({ ...rest, timings: { ...timings, run_ms: undefined } });
}

/** A queued request's handles, as the submit answer and every status carry them. */
export interface QueueHandles {
  status_url: string;
  response_url: string;
  cancel_url: string;
}

/**
 * The handles of request `id` for `model` on the gateway at `origin`: the one layout of the queue's URLs,
 * which the gateway answers a submit with and a client builds again from an id. The pool travels as
 * `?pool=` (not in the default pool), so the URLs work without the X-Switchyard-Pool header.
 */
export function queueHandles(origin: string, pool: string, model: string, id: string): QueueHandles {
  const base = `${origin}/v2/queue/models/${encodeURIComponent(model)}/requests/${id}`;
  const query = pool === DEFAULT_POOL ? "" : `?pool=${encodeURIComponent(pool)}`;
  return {
    status_url: `${base}/status${query}`,
    response_url: `${base}${query}`,
    cancel_url: `${base}/cancel${query}`,
  };
}

/** The answer to a cancel (fal's words): the request is, or already was, cancelled; or it had finished. */
export type CancelAnswer = "CANCELLATION_REQUESTED" | "ALREADY_COMPLETED";
