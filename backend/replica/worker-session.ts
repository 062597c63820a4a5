/**
 * One model's onnxruntime session, held in a worker thread of its own for the session's whole life.
 * onnxruntime-node 1.29 creates and runs sessions synchronously on the JavaScript thread that calls it
 * (its backend only defers the native call with setImmediate), so on the main thread a 4 s load, or a long
 * run on the CPU, would freeze everything else there: other models' requests, other replicas, the gateway
 * link's heartbeats, the HTTP server. In a worker, loads and runs of different models, and of different
 * replicas, really overlap. Terminating the worker on release also returns whatever native memory the
 * session left behind.
 */
import { MessageChannel, type MessagePort } from "node:worker_threads";
import type { InferenceSession } from "onnxruntime-node";
import type { Tensor } from "../../shared/oip/tensor.ts";
import { recycleInputs } from "./buffer-pool.ts";
import type { LaneReport, LaneSettings } from "./lane-protocol.ts";
import type { TensorSpec } from "./ort-tensors.ts";
import { partsForTransfer, type SessionReply } from "./session-protocol.ts";
import { SessionGoneError, SessionThread, WorkerFailure } from "./session-thread.ts";
import { sessionWorkerUrl } from "./session-worker-url.ts";
import { keepSpare, takeWorker } from "./spare-worker.ts";

export interface RunOptions {
  /**
   * The feeds' typed arrays belong to this run (the caller built them for it): they move to the worker
   * without a copy, and are detached (empty) here afterwards. Otherwise they are copied once.
   */
  handOver?: boolean;
}

/** A run's outputs, and how long onnxruntime took for it on the session's thread. */
export interface RunResult {
  outputs: Tensor[];
  sessionMs: number;
}

export interface BatchRunOptions {
  /** Per part: its typed arrays belong to this run, and move to the worker without a copy (RunOptions). */
  handOver: readonly boolean[];
  /** Rows the stacked batch is padded to (a batch bucket, batch-buckets.ts). */
  padTo?: number | undefined;
}

/** A batch's outputs (all rows, the padding's included), and its timings on the session's thread. */
export interface BatchRunResult extends RunResult {
  /** How long stacking the parts took on the session's thread. */
  stackMs: number;
  /**
   * The parts as they ran, back on this thread, each with the tensors whose buffers are of a size the pool
   * reuses (the others stay on the session's thread: buffer-pool.ts poolableParts): a handed-over part's
   * buffers were detached here, and these are them again. They are the caller's to reuse (recycleInputs)
   * once nothing reads them.
   */
  parts: Tensor[][];
}

/**
 * A batch that failed on the session's thread. `parts` holds its parts back on this thread (as in
 * BatchRunResult), so that each request can run again alone; undefined when the worker is gone with them.
 */
export class BatchRunError extends Error {
  readonly parts: Tensor[][] | undefined;

  constructor(cause: Error, parts: Tensor[][] | undefined) {
    super(cause.message, { cause });
    this.name = "BatchRunError";
    this.parts = parts;
  }
}

export class WorkerSession {
  readonly inputs: TensorSpec[];
  readonly outputs: TensorSpec[];
  /** The operator types the model's graph uses; undefined when its file could not be walked for them. */
  readonly opTypes: ReadonlySet<string> | undefined;
  readonly #thread: SessionThread;

  /**
   * Starts a worker and creates the session there, from the model file at `path`. Rejects with
   * onnxruntime's error, as it was, when the model cannot be loaded (the worker is then ended).
   * `spinMs`: how long its thread keeps turning after each run (hot-loop.ts; 0, the default: it sleeps at
   * once). `entry` is the worker's module (tests point it at one that misbehaves).
   */
  static async create(
    path: string,
    options: InferenceSession.SessionOptions,
    { spinMs = 0, entry = sessionWorkerUrl() }: { spinMs?: number; entry?: URL } = {},
  ): Promise<WorkerSession> {
    const thread = new SessionThread(takeWorker(entry), path);
    try {
      const reply = await thread.request({ type: "create", path, options, spinMs });
      if (reply.type !== "ready") throw unexpectedReply(reply);
      return new WorkerSession(thread, reply);
    } catch (error) {
      await thread.close().catch(() => undefined);
      throw error;
    } finally {
      keepSpare(entry);
    }
  }

  /** Use create(). */
  constructor(
    thread: SessionThread,
    specs: { inputs: TensorSpec[]; outputs: TensorSpec[]; opTypes: string[] | null },
  ) {
    this.#thread = thread;
    this.inputs = specs.inputs;
    this.outputs = specs.outputs;
    this.opTypes = specs.opTypes === null ? undefined : new Set(specs.opTypes);
  }

  /**
   * Runs the session; resolves with the outputs named, in that order. Rejects with onnxruntime's error,
   * as it was, when it cannot run on these inputs, and with a SessionGoneError when the session was
   * released or its worker died (before or during the run).
   */
  async run(
    feeds: readonly Tensor[],
    outputs: readonly string[],
    options: RunOptions = {},
  ): Promise<RunResult> {
    try {
      const ran = await this.runBatch([feeds], outputs, { handOver: [options.handOver === true] });
      recycleInputs(ran.parts);
      return { outputs: ran.outputs, sessionMs: ran.sessionMs };
    } catch (error) {
      if (!(error instanceof BatchRunError)) throw error;
      if (error.parts !== undefined) recycleInputs(error.parts);
      throw error.cause;
    }
  }

  /**
   * One run for several requests' feeds (`parts`), stacked along the first dimension on the session's
   * thread and padded to `padTo` rows, so that the main thread does not copy the batch. Fails as run()
   * does, wrapped in a BatchRunError that gives the parts back.
   */
  async runBatch(
    parts: readonly (readonly Tensor[])[],
    outputs: readonly string[],
    options: BatchRunOptions,
  ): Promise<BatchRunResult> {
    const moved = partsForTransfer(parts, options.handOver);
    let reply: SessionReply;
    try {
      reply = await this.#thread.request(
        {
          type: "run",
          parts: moved.parts,
          outputs: [...outputs],
          ...(options.padTo === undefined ? {} : { padTo: options.padTo }),
        },
        moved.transfer,
      );
    } catch (error) {
      const cause = error instanceof Error ? error : new Error(String(error));
      throw new BatchRunError(cause, error instanceof WorkerFailure ? error.parts : undefined);
    }
    if (reply.type !== "result") throw unexpectedReply(reply);
    return {
      outputs: reply.outputs,
      sessionMs: reply.sessionMs,
      stackMs: reply.stackMs,
      parts: reply.parts ?? [],
    };
  }

  /**
   * Opens a lane to the session's thread (lane-protocol.ts): the port to hand an intake thread. `onReport`
   * hears what the session's lanes served (one listener for the session: the replica's).
   */
  async openLane(settings: LaneSettings, onReport: (report: LaneReport) => void): Promise<MessagePort> {
    this.#thread.onLaneReport = onReport;
    const { port1, port2 } = new MessageChannel();
    try {
      const reply = await this.#thread.request({ type: "lane", port: port2, settings }, [port2]);
      if (reply.type !== "lane-opened") throw unexpectedReply(reply);
    } catch (error) {
      port1.close();
      throw error;
    }
    return port1;
  }

  /** Resolves once what this session's lanes served has been reported (the report arrives before this). */
  async reportLanes(): Promise<void> {
    let reply: SessionReply;
    try {
      reply = await this.#thread.request({ type: "report-lanes" });
    } catch (error) {
      // Being released: its worker reports before the release's reply, which ends the close.
      if (error instanceof SessionGoneError && error.reason === "released") {
        await this.#thread.close().catch(() => undefined);
        return;
      }
      throw error;
    }
    if (reply.type !== "lanes-reported") throw unexpectedReply(reply);
  }

  /**
   * Sends this session's lanes' batches of `size` rows (a batch bucket) to `bucket`'s thread, over a port
   * between the two threads (session-peer.ts).
   */
  async connectBucket(size: number, bucket: WorkerSession): Promise<void> {
    const { port1, port2 } = new MessageChannel();
    const served = await bucket.#thread.request({ type: "peer", port: port2 }, [port2]);
    if (served.type !== "connected") throw unexpectedReply(served);
    const sending = await this.#thread.request({ type: "bucket", size, port: port1 }, [port1]);
    if (sending.type !== "connected") throw unexpectedReply(sending);
  }

  /**
   * Releases the session once the runs already sent end, and ends its worker; resolves when the thread
   * is gone. Idempotent, and safe on a session whose worker died.
   */
  release(): Promise<void> {
    return this.#thread.close();
  }

  /** Whether its worker thread is alive: false once released, or after the worker died. */
  get running(): boolean {
    return this.#thread.running;
  }
}

function unexpectedReply(reply: SessionReply): Error {
  return new Error(`the session worker answered '${reply.type}' out of turn`);
}
