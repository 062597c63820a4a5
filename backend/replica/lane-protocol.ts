/**
 * Lanes: an HTTP intake thread (backend/server/intake-thread.ts) sending a loaded model's requests straight
 * to the thread that holds its session (session-worker.ts), over a MessagePort of their own, and the answers
 * coming straight back. Requests on the main thread's path cross four times (intake -> main -> session ->
 * main -> intake) and the main thread handles each one; on a lane they cross twice and the main thread only
 * grants lanes and counts what they served, from reports (LANE_REPORT_INTERVAL_MS). (A server of that shape,
 * a hop each way, served a small MLP batched 2.2 to 2.9x what the agent did through its main thread on the
 * H200: bench/results/hot-path-cuda-lanes.md.)
 *
 * The main thread grants a lane (intake-threads.ts) after it served a request of that model from that
 * intake thread, for LANE_LIFETIME_MS; the lane holds a lease on the model's session meanwhile, so the
 * session cannot be unloaded under it. After its lifetime (or once revoked: the model is being unloaded)
 * the intake thread sends its next request on the main path again, which resolves the version anew and
 * may grant a new lane, and closes the old one once its requests are answered.
 */
import type { Tensor } from "../../shared/oip/tensor.ts";
import type { WireError } from "../wire-error.ts";
import type { BatchSettings } from "./batch-settings.ts";
import type { TensorSpec } from "./ort-tensors.ts";

/**
 * How long a lane is used before its model goes through the main thread again: a new version in the
 * repository is seen within this (as the replica's version memo refreshes), and an idle model's lease ends
 * within it, so that its keep-alive and the cache's LRU see it idle.
 */
export const LANE_LIFETIME_MS = 1000;

/**
 * The session's thread reports what its lanes served at most this often: at once when it had not reported
 * for this long (an idle or lightly loaded model's figures are current when its answer is), otherwise at the
 * end of the interval. Each report wakes the main thread and updates the replica's statistics and state; one
 * per turn meant one per request or two for an unbatched model, and cost about a seventh of the agent's CPU
 * per answer on a 2-core machine (bench/results/hot-path-reports-runs.md). Readers that must see every
 * answered request (the statistics and metrics endpoints) ask for the report first (Replica.lanesReported).
 */
export const LANE_REPORT_INTERVAL_MS = 20;

/** What the session's thread needs to serve a lane: the model's checks and its batching. */
export interface LaneSettings {
  /** The model's name, for error messages. */
  model: string;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  /** Its batcher's settings; undefined: each request runs alone. */
  batching?: BatchSettings | undefined;
  /** Requests the session takes from its lanes at once (running, or gathering into a batch). */
  maxConcurrency: number;
  /** Requests that may wait beyond those; more are refused (429). */
  maxQueue: number;
}

/** intake -> session */
export type LaneRequest =
  | {
      type: "infer";
      id: number;
      /**
       * The client requests it carries: 1, or a group an intake thread stacked along the first dimension
       * (lane-groups.ts), whose rows come back together and are split there. A group counts as one request
       * against the session's bounds, and as `requests` in its statistics; one refused on its inputs (400)
       * is not counted, since its thread runs each of its requests again alone.
       */
      requests: number;
      inputs: Tensor[];
      /** Output names; omitted: all. */
      outputs?: string[];
      /**
       * Each client request's id (InferCall.requestId), in the order of its rows; "" for one that has none.
       * Only the log lines about them read it (MeteredReplica).
       */
      requestIds: string[];
      /** Date.now() at which the client stops waiting (one process, one clock), and its budget. */
      deadlineAt: number;
      budgetMs: number;
    }
  /** The client went away (or its deadline passed): a request still waiting is dropped. */
  | { type: "abort"; id: number };

/** session -> intake */
export type LaneAnswer =
  | {
      type: "outcome";
      id: number;
      outputs: Tensor[];
      /** Waiting for a place and then a batch; the run (the batch's); onnxruntime's part of it. */
      timings: { queueMs: number; runMs: number; sessionMs: number };
      batch: { requests: number; rows: number };
      /**
       * The request's input buffers that a pool takes back (buffer-pool.ts poolable), for the intake thread's
       * next bodies; the others stay with the session's thread, whose garbage collector frees them.
       */
      spare: ArrayBuffer[];
    }
  | { type: "failure"; id: number; error: WireError };

/** What one lane request came to, for the replica's statistics and metrics (session -> main, in reports). */
export type LaneServed =
  | {
      ok: true;
      totalMs: number;
      queueMs: number;
      runMs: number;
      sessionMs: number;
      batch: { requests: number; rows: number };
    }
  | { ok: false; totalMs: number; error: WireError };

/** A served request as a report tells of it: with the client's id for it ("" when it had none). */
export type LaneServedRequest = LaneServed & { requestId: string };

/** One run a lane made: its rows and where its time went (ModelStatisticsBook.executed). */
export interface LaneRun {
  rows: number;
  stackMs: number;
  runMs: number;
}

/**
 * The session thread's report to the main thread, at most every LANE_REPORT_INTERVAL_MS while lanes are
 * served. Answered requests and runs travel as columns of numbers in typed arrays that move, not as an object
 * per request: at tens of thousands of requests a second, cloning those objects was the largest cost of the
 * session's thread.
 */
export interface LaneReport {
  type: "lane-report";
  /** SERVED_FIELDS numbers per answered request. */
  served: Float64Array;
  /** The client's id of each answered request, in the same order. */
  servedIds: string[];
  /** Failed requests (few): each as it is. */
  failed: Extract<LaneServedRequest, { ok: false }>[];
  /** RUN_FIELDS numbers per run. */
  runs: Float64Array;
}

const SERVED_FIELDS = 6;
const RUN_FIELDS = 3;

/** Gathers a turn's requests and runs into a LaneReport. */
export class LaneReportBuilder {
  #served: number[] = [];
  #servedIds: string[] = [];
  #failed: Extract<LaneServedRequest, { ok: false }>[] = [];
  #runs: number[] = [];

  served(served: LaneServed, requestId: string): void {
    if (!served.ok) {
      this.#failed.push({ ...served, requestId });
      return;
    }
    const { totalMs, queueMs, runMs, sessionMs, batch } = served;
    this.#served.push(totalMs, queueMs, runMs, sessionMs, batch.requests, batch.rows);
    this.#servedIds.push(requestId);
  }

  ran(run: LaneRun): void {
    this.#runs.push(run.rows, run.stackMs, run.runMs);
  }

  /** Whether nothing was gathered since the last report. */
  get empty(): boolean {
    return this.#served.length === 0 && this.#failed.length === 0 && this.#runs.length === 0;
  }

  /** The report, and the buffers that move with it; the builder starts over. */
  take(): { report: LaneReport; transfer: ArrayBuffer[] } {
    const report: LaneReport = {
      type: "lane-report",
      served: Float64Array.from(this.#served),
      servedIds: this.#servedIds,
      failed: this.#failed,
      runs: Float64Array.from(this.#runs),
    };
    this.#served = [];
    this.#servedIds = [];
    this.#failed = [];
    this.#runs = [];
    return { report, transfer: [report.served.buffer as ArrayBuffer, report.runs.buffer as ArrayBuffer] };
  }
}

/** Each request a report tells of, answered or failed. */
export function* servedIn(report: LaneReport): Generator<LaneServedRequest> {
  const { served, servedIds } = report;
  for (let at = 0, index = 0; at + SERVED_FIELDS <= served.length; at += SERVED_FIELDS, index += 1) {
    yield {
      ok: true,
      totalMs: served[at] ?? 0,
      queueMs: served[at + 1] ?? 0,
      runMs: served[at + 2] ?? 0,
      sessionMs: served[at + 3] ?? 0,
      batch: { requests: served[at + 4] ?? 0, rows: served[at + 5] ?? 0 },
      requestId: servedIds[index] ?? "",
    };
  }
  yield* report.failed;
}

/** Each run a report tells of. */
export function* runsIn(report: LaneReport): Generator<LaneRun> {
  const { runs } = report;
  for (let at = 0; at + RUN_FIELDS <= runs.length; at += RUN_FIELDS)
    yield { rows: runs[at] ?? 0, stackMs: runs[at + 1] ?? 0, runMs: runs[at + 2] ?? 0 };
}
