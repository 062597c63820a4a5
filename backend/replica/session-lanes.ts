/**
 * The session thread's end of its lanes (lane-protocol.ts): requests from intake threads, checked, held to
 * the replica's concurrency and queue bounds, batched with the model's own batcher (requests of every lane
 * share its batches), run on the session, and answered straight back on the lane they came from. The main
 * thread hears what they came to from reports (LANE_REPORT_INTERVAL_MS), for the replica's statistics and
 * metrics.
 */
import type { MessagePort } from "node:worker_threads";
import { withinBudget } from "../../shared/deadline.ts";
import { badInput, SwitchyardError } from "../../shared/errors.ts";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { inputBuffers } from "../server/intake-protocol.ts";
import { eachMessage, TickMailbox } from "../server/tick-mailbox.ts";
import { toWireError } from "../wire-error.ts";
import { bucketPlan, dropPadding } from "./batch-buckets.ts";
import { type Executed, executeOne, ModelBatcher } from "./batcher.ts";
import { poolable } from "./buffer-pool.ts";
import {
  LANE_REPORT_INTERVAL_MS,
  type LaneAnswer,
  type LaneReport,
  LaneReportBuilder,
  type LaneRequest,
  type LaneRun,
  type LaneServed,
  type LaneSettings,
} from "./lane-protocol.ts";
import { runRefusal } from "./ort-tensors.ts";
import { PeerRunError, type SessionPeer } from "./session-peer.ts";
import { forTransfer } from "./session-protocol.ts";
import { Slots } from "./slots.ts";
import { answersOf, batchSizeOf, stackingKey } from "./tensor-batch.ts";
import { checkInputs, wantedOutputs } from "./tensor-checks.ts";

/** One run of this thread's session for several requests' feeds, stacked and padded (session-worker.ts runParts). */
export type RunParts = (
  parts: Tensor[][],
  outputs: string[],
  padTo?: number,
) => Promise<{ outputs: Tensor[]; sessionMs: number; stackMs: number }>;

interface LaneCall {
  id: number;
  lane: TickMailbox<LaneAnswer>;
  /** Client requests it carries (a group, stacked by the intake thread: LaneRequest). */
  requests: number;
  /** Their ids, in order (LaneRequest). */
  requestIds: string[];
  inputs: Tensor[];
  wanted: string[];
  size: number;
  deadlineAt: number;
  budgetMs: number;
  arrivedAt: number;
  /** Aborts it while it waits in the batcher. */
  abort: AbortController;
}

export class SessionLanes {
  readonly #runParts: RunParts;
  readonly #report: (report: LaneReport, transfer: ArrayBuffer[]) => void;
  #settings: LaneSettings | undefined;
  #batcher: ModelBatcher<LaneCall, { outputs: Tensor[]; sessionMs: number }> | undefined;
  /** Places for requests running or gathering into a batch (the replica's own kind), and the line for them. */
  #slots = new Slots(1, () => {});
  /** Each lane's requests not yet answered, by id (ids are the lane's own). */
  readonly #calls = new Map<TickMailbox<LaneAnswer>, Map<number, LaneCall>>();
  /** With batch buckets: the sessions of the other sizes, on threads of their own. */
  readonly #buckets = new Map<number, SessionPeer>();
  readonly #reportBuilder = new LaneReportBuilder();
  /** A report is scheduled (LANE_REPORT_INTERVAL_MS). */
  #reportDue = false;
  #reportedAt = Number.NEGATIVE_INFINITY;

  constructor(runParts: RunParts, report: (report: LaneReport, transfer: ArrayBuffer[]) => void) {
    this.#runParts = runParts;
    this.#report = report;
  }

  /** Batches padded to `size` rows run on the session `peer` reaches (a batch bucket, batch-buckets.ts). */
  addBucket(size: number, peer: SessionPeer): void {
    this.#buckets.set(size, peer);
  }

  /** Serves a new lane on `port` (every lane of a session has the same settings: its model's). */
  open(port: MessagePort, settings: LaneSettings): void {
    if (this.#settings === undefined) {
      this.#settings = settings;
      this.#slots = new Slots(settings.maxConcurrency, () => {});
      if (settings.batching !== undefined) {
        // Without buckets every batch runs right here, on this thread's session: nothing to hide behind a
        // second batch out, which would only go out smaller (batcher.ts; on the H200 a small MLP batched at
        // 32 clients served 17,700 req/s with one out against 13,900 with two). A bucket's batch crosses to
        // its own thread: two out again.
        const batchesOut = settings.batching.buckets === undefined ? 1 : undefined;
        this.#batcher = new ModelBatcher(settings.batching, (calls) => this.#runBatch(calls), { batchesOut });
      }
    }
    // A batch's answers are posted by the reactions to its run's end (one task): they leave together right
    // after it. Gathered over the turn, they waited for the next turn's poll phase, in which this thread takes
    // in every request that came during the run (a small gain: a small MLP batched at 32 clients on the H200
    // served 2 and 5% more in the means of alternating runs, within the host's drift). Unbatched, the runs of
    // one check phase follow each other here, each a task: their answers still travel together, once per
    // turn (with one message per run that MLP's p99 unbatched read higher in all five alternating pairs:
    // bench/results/hot-path-cuda-answers.md).
    const lane = new TickMailbox<LaneAnswer>(
      port,
      (answer, error) => {
        // An answer that cannot cross (nothing the session makes should be one) fails its request instead.
        if (answer.type === "outcome")
          lane.post({ type: "failure", id: answer.id, error: toWireError(error) });
      },
      this.#batcher === undefined ? "turn" : "task",
    );
    const calls = new Map<number, LaneCall>();
    this.#calls.set(lane, calls);
    port.on(
      "message",
      eachMessage((request: LaneRequest) => this.#receive(lane, calls, request)),
    );
    // The intake thread closed it (its requests answered), or exited: what it still had waiting is dropped.
    port.once("close", () => {
      this.#calls.delete(lane);
      const closed = new SwitchyardError("unavailable", "the lane closed");
      for (const call of calls.values()) call.abort.abort(closed);
    });
  }

  #receive(lane: TickMailbox<LaneAnswer>, calls: Map<number, LaneCall>, request: LaneRequest): void {
    if (request.type === "abort") {
      const call = calls.get(request.id);
      // Dropped if it still waits (for a place, or in the batcher); one that runs is left to end.
      call?.abort.abort(new SwitchyardError("unavailable", "the client went away"));
      return;
    }
    const settings = this.#settings as LaneSettings;
    const call: LaneCall = {
      id: request.id,
      lane,
      requests: request.requests,
      requestIds: request.requestIds,
      inputs: request.inputs,
      wanted: [],
      size: batchSizeOf(request.inputs) ?? 0,
      deadlineAt: request.deadlineAt,
      budgetMs: request.budgetMs,
      arrivedAt: performance.now(),
      abort: new AbortController(),
    };
    try {
      // Checked before the request can join a batch: a bad request fails alone.
      checkInputs(settings.model, request.inputs, settings.inputs);
      call.wanted = wantedOutputs(settings.model, settings.outputs, request.outputs);
    } catch (error) {
      this.#fail(call, error);
      return;
    }
    const slots = this.#slots;
    if (slots.inUse >= slots.capacity && slots.waiting >= settings.maxQueue) {
      const message = `the model's session is busy and ${slots.waiting} requests are already waiting; retry later`;
      this.#fail(call, new SwitchyardError("queue_full", message, { retryAfterSeconds: 1 }));
      return;
    }
    calls.set(call.id, call);
    void this.#serve(call)
      .then(
        ({ ran, startedAt }) => this.#answer(call, ran, startedAt),
        (error: unknown) => this.#fail(call, error),
      )
      .finally(() => calls.delete(call.id));
  }

  /** Once it has a place: through the batcher, or alone. Its abort drops it while it waits for either. */
  async #serve(call: LaneCall): Promise<{ ran: Executed; startedAt: number }> {
    const release = await this.#slots.acquire(call.abort.signal);
    try {
      const startedAt = performance.now();
      if (Date.now() >= call.deadlineAt) {
        throw new SwitchyardError(
          "deadline_exceeded",
          `'${this.#settings?.model ?? ""}' could not start ${withinBudget(call.budgetMs)}`,
        );
      }
      const ran = await executeOne(
        this.#batcher,
        call,
        stackingKey(call.inputs),
        call.abort.signal,
        (calls) => this.#runBatch(calls),
      );
      return { ran, startedAt };
    } finally {
      release();
    }
  }

  /** One run for the calls, each answered with the outputs it wants (its rows of them). */
  async #runBatch(calls: LaneCall[]): Promise<{ outputs: Tensor[]; sessionMs: number }[]> {
    const names = [...new Set(calls.flatMap((call) => call.wanted))];
    const started = performance.now();
    const rows = calls.reduce((sum, call) => sum + call.size, 0);
    let ran: Awaited<ReturnType<RunParts>>;
    let padTo: number | undefined;
    try {
      ({ ran, padTo } = await this.#run(calls, names, rows));
    } catch (error) {
      throw error instanceof SwitchyardError ? error : runRefusal(this.#settings?.model ?? "", error);
    }
    this.#noteRun({ rows, stackMs: ran.stackMs, runMs: performance.now() - started - ran.stackMs });
    const outputs = padTo === undefined ? ran.outputs : dropPadding(ran.outputs, rows, padTo);
    return answersOf(calls, names, outputs).map((answer) => ({ outputs: answer, sessionMs: ran.sessionMs }));
  }

  /**
   * The run, on this thread's session, or with batch buckets on the session of the smallest bucket that
   * holds the rows (the first session is bucket 1), padded up to it.
   */
  async #run(
    calls: LaneCall[],
    names: string[],
    rows: number,
  ): Promise<{ ran: Awaited<ReturnType<RunParts>>; padTo: number | undefined }> {
    const parts = calls.map((call) => call.inputs);
    const { bucket, padTo } = bucketPlan(rows, this.#settings?.batching?.buckets);
    const peer = bucket === undefined ? undefined : this.#buckets.get(bucket);
    if (peer === undefined) return { ran: await this.#runParts(parts, names, padTo), padTo };
    try {
      const ran = await peer.run(parts, names, padTo);
      // The parts moved there and came back: the calls hold them again (for their spare buffers).
      calls.forEach((call, index) => {
        call.inputs = ran.parts[index] ?? call.inputs;
      });
      return { ran, padTo };
    } catch (error) {
      // Given back with the failure, so that each request can run again alone (batcher.ts).
      if (error instanceof PeerRunError && error.parts !== undefined)
        calls.forEach((call, index) => {
          call.inputs = error.parts?.[index] ?? call.inputs;
        });
      throw error;
    }
  }

  #answer(call: LaneCall, ran: Executed, startedAt: number): void {
    // A group's rows are split on its HTTP thread: an output that does not keep them (a reduction, say) cannot
    // be, and its requests are run again alone there.
    const unsplittable = ran.outputs.find((output) => output.shape[0] !== call.size);
    if (call.requests > 1 && unsplittable !== undefined) {
      const message = `output '${unsplittable.name}' of model '${this.#settings?.model ?? ""}' does not keep the batch's rows`;
      this.#fail(call, badInput(message));
      return;
    }
    const queueMs = startedAt - call.arrivedAt + ran.queuedMs;
    // The outputs of a run that was this call's alone are its own and move; a batch's rows are copied out.
    const outputs = forTransfer(ran.outputs, ran.rows === call.size);
    // The buffers the request came in (as the intake thread sent them), back to it: those its pool takes back.
    // One of any other size would only be dropped there, after a transfer each way that this thread, the
    // busiest of a batching model's, pays for (buffer-pool.ts poolable); here its garbage collector frees it
    // (a small MLP's groups: a few KiB each).
    const spare = new Set(inputBuffers(call.inputs).filter(poolable));
    // (An output that shared its buffer with an input would move once, with the outputs.)
    for (const buffer of outputs.transfer) spare.delete(buffer as ArrayBuffer);
    const timings = { queueMs, runMs: ran.runMs, sessionMs: ran.sessionMs };
    const batch = { requests: ran.requests, rows: ran.rows };
    call.lane.post(
      { type: "outcome", id: call.id, outputs: outputs.tensors, timings, batch, spare: [...spare] },
      [...outputs.transfer, ...spare],
    );
    this.#noteServed(call, { ok: true, totalMs: performance.now() - call.arrivedAt, ...timings, batch });
  }

  #fail(call: LaneCall, error: unknown): void {
    const wire = toWireError(error);
    call.lane.post({ type: "failure", id: call.id, error: wire });
    // A group refused on its inputs is run again request by request (lane-groups.ts): those runs are counted.
    if (call.requests > 1 && wire.code === "bad_input") return;
    this.#noteServed(call, { ok: false, totalMs: performance.now() - call.arrivedAt, error: wire });
  }

  /** Each client request the call carried, for the replica's statistics, metrics and request log. */
  #noteServed(call: LaneCall, served: LaneServed): void {
    for (let request = 0; request < call.requests; request += 1)
      this.#reportBuilder.served(served, call.requestIds[request] ?? "");
    this.#reportSoon();
  }

  #noteRun(run: LaneRun): void {
    this.#reportBuilder.ran(run);
    this.#reportSoon();
  }

  /**
   * The main thread hears of what was served at the end of this turn when it had not heard for
   * LANE_REPORT_INTERVAL_MS, else once the interval is over: one message for all of it.
   */
  #reportSoon(): void {
    if (this.#reportDue) return;
    this.#reportDue = true;
    const wait = this.#reportedAt + LANE_REPORT_INTERVAL_MS - performance.now();
    const send = () => {
      this.#reportDue = false;
      this.reportNow();
    };
    if (wait <= 0) setImmediate(send);
    else setTimeout(send, wait);
  }

  /** Reports what was served and not yet reported, now (before a reader of the statistics, or a release). */
  reportNow(): void {
    if (this.#reportBuilder.empty) return;
    this.#reportedAt = performance.now();
    const { report, transfer } = this.#reportBuilder.take();
    this.#report(report, transfer);
  }
}
