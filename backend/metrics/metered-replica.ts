import { SwitchyardError } from "../../shared/errors.ts";
import { modelKey } from "../../shared/model-names.ts";
import type { ModelRef, ReplicaState } from "../../shared/protocol/replica-state.ts";
import type { Log } from "../log.ts";
import type { LaneServedRequest } from "../replica/lane-protocol.ts";
import {
  type InferCall,
  type InferOutcome,
  Replica,
  type ReplicaOptions,
  type ServedInfo,
} from "../replica/replica.ts";
import { fromWireError } from "../wire-error.ts";
import type { AgentMetrics } from "./agent-metrics.ts";

export interface MeteringOptions {
  metrics: AgentMetrics;
  log: Log;
  /** `--log-requests`: one log line per request. */
  logRequests: boolean;
}

/**
 * A Replica that counts what it does: every request (answered or failed, with its timings and batch) and
 * every change of its models (loads, their durations, failures, evictions). The gateway link and the
 * standalone server use it as any replica; counting happens at the one place every request passes.
 */
export class MeteredReplica extends Replica {
  readonly #metering: MeteringOptions;

  constructor(options: ReplicaOptions, metering: MeteringOptions) {
    super(options);
    this.#metering = metering;
    let last: ReplicaState = this.state();
    metering.metrics.replicaChanged(this.id, undefined, last, performance.now());
    this.onChange((state) => {
      metering.metrics.replicaChanged(this.id, last, state, performance.now());
      last = state;
    });
  }

  protected override modelRan(model: ModelRef, runs: number): void {
    this.#metering.metrics.modelRan(this.id, model.name, runs);
  }

  /** A lane's request (lane-protocol.ts), counted as one on the main thread's path is. */
  protected override laneServed(model: ModelRef, served: LaneServedRequest): void {
    // Straight from an HTTP thread to the session's thread: its log line says so, and names the request as
    // the main thread's path does (there, the log's own context: withRequestId).
    const lane: LineOrigin = {
      ...(served.requestId === "" ? {} : { requestId: served.requestId }),
      lane: true,
    };
    if (!served.ok) {
      this.#failed(model.name, fromWireError(served.error), served.totalMs, lane);
      return;
    }
    const timings = {
      queueMs: served.queueMs,
      loadMs: 0,
      inferMs: served.runMs,
      sessionMs: served.sessionMs,
    };
    this.#served({ model, cache: "hit", timings, batch: served.batch }, served.totalMs, lane);
  }

  override async infer(call: InferCall): Promise<InferOutcome> {
    const started = performance.now();
    let outcome: InferOutcome;
    try {
      outcome = await super.infer(call);
    } catch (error) {
      this.#failed(call.model, error, performance.now() - started);
      throw error;
    }
    this.#served(outcome, performance.now() - started);
    return outcome;
  }

  #served(outcome: ServedInfo, totalMs: number, origin: LineOrigin = {}): void {
    this.#metering.metrics.served(this.id, outcome, totalMs);
    if (!this.#metering.logRequests) return;
    this.#metering.log("request", {
      ...named(origin),
      model: modelKey(outcome.model),
      replica: this.id,
      status: 200,
      cache: outcome.cache,
      queueMs: round(outcome.timings.queueMs),
      loadMs: round(outcome.timings.loadMs),
      inferMs: round(outcome.timings.inferMs),
      totalMs: round(totalMs),
      ...(outcome.batch === undefined ? {} : { batch: outcome.batch.requests }),
      ...onLane(origin),
    });
  }

  #failed(model: string, error: unknown, totalMs: number, origin: LineOrigin = {}): void {
    this.#metering.metrics.failed(this.id, model, error, totalMs);
    // Internal failures are always worth a line; the clients' mistakes only with --log-requests, and as the
    // request lines they are (info): an error line is for what the agent itself failed at (5xx).
    const status = SwitchyardError.from(error).status;
    if (!this.#metering.logRequests && status !== 500) return;
    this.#metering.log(status >= 500 ? "request failed" : "request", {
      ...named(origin),
      model,
      replica: this.id,
      status,
      error: error instanceof Error ? error.message : String(error),
      totalMs: round(totalMs),
      ...onLane(origin),
    });
  }
}

/**
 * Where a request line's request came from: a lane names the client's id itself (the main thread's path
 * has it from the log's context), and says it was a lane.
 */
interface LineOrigin {
  requestId?: string;
  lane?: true;
}

const named = (origin: LineOrigin) => (origin.requestId === undefined ? {} : { requestId: origin.requestId });
const onLane = (origin: LineOrigin) => (origin.lane === undefined ? {} : { lane: true });

const round = (ms: number) => Math.round(ms * 100) / 100;
