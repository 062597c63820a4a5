/**
 * The main thread's end of one session worker (session-worker.ts): requests out, replies matched back by
 * id, and the worker's lifetime. A worker that dies (an uncaught error, its heap exhausted, an exit) fails
 * every request waiting on it, and every later one, with a SessionGoneError; nothing waits forever.
 * Note that a native abort inside onnxruntime (std::terminate, a segfault) still ends the whole process:
 * threads share it.
 */
import type { TransferListItem, Worker } from "node:worker_threads";
import type { Tensor } from "../../shared/oip/tensor.ts";
import type { LaneReport } from "./lane-protocol.ts";
import type { Envelope, SessionReply, SessionRequest } from "./session-protocol.ts";

/** What the worker answered a request with when it failed: its message as it was, and a run's parts. */
export class WorkerFailure extends Error {
  /** A run's parts, given back (session-protocol.ts). */
  readonly parts: Tensor[][] | undefined;

  constructor(message: string, parts: Tensor[][] | undefined) {
    super(message);
    this.name = "WorkerFailure";
    this.parts = parts;
  }
}

/** The session can take no more requests: it was released, or its worker exited. */
export class SessionGoneError extends Error {
  readonly reason: "released" | "exited";

  constructor(reason: "released" | "exited", message: string) {
    super(message);
    this.name = "SessionGoneError";
    this.reason = reason;
  }
}

interface Waiter {
  resolve(reply: SessionReply): void;
  reject(error: Error): void;
}

export class SessionThread {
  readonly #worker: Worker;
  readonly #label: string;
  readonly #waiting = new Map<number, Waiter>();
  readonly #exited: Promise<void>;
  #nextId = 1;
  #running = true;
  /** Set once the thread takes no more requests: why they are refused. */
  #refusal: SessionGoneError | undefined;
  #closing: Promise<void> | undefined;

  /** Takes over a started session worker; `label` names it in errors (the model's file). */
  constructor(worker: Worker, label: string) {
    this.#label = label;
    this.#worker = worker;
    // Only waiting requests keep the process alive, as a pending onnxruntime call did before; an idle
    // loaded model does not (it did not either).
    this.#worker.unref();
    this.#worker.on("message", (message: Envelope<SessionReply> | LaneReport) => {
      if (message.type === "lane-report") this.onLaneReport?.(message);
      else this.#answer(message);
    });
    this.#worker.on("error", (error) => this.#fail(this.#died(`crashed: ${error.message}`)));
    this.#worker.on("messageerror", (error) => {
      this.#fail(this.#died(`sent a reply that could not be read (${error.message})`));
      void this.#worker.terminate();
    });
    this.#exited = new Promise((resolve) => {
      this.#worker.once("exit", (code) => {
        this.#running = false;
        this.#fail(this.#died(`stopped unexpectedly (exit code ${code})`));
        resolve();
      });
    });
  }

  /** Hears what the session's lanes served (lane-protocol.ts), at most every LANE_REPORT_INTERVAL_MS. */
  onLaneReport: ((report: LaneReport) => void) | undefined;

  /** Whether the worker thread is still alive. */
  get running(): boolean {
    return this.#running;
  }

  /**
   * Sends a request and resolves with its reply; an "error" reply rejects with a WorkerFailure that carries
   * the worker's message as it was. The buffers in `transfer` move to the worker (detached here).
   */
  request(request: SessionRequest, transfer: readonly TransferListItem[] = []): Promise<SessionReply> {
    if (this.#refusal !== undefined) return Promise.reject(this.#refusal);
    const id = this.#nextId;
    this.#nextId += 1;
    return new Promise<SessionReply>((resolve, reject) => {
      const envelope: Envelope<SessionRequest> = { ...request, id };
      this.#worker.postMessage(envelope, transfer);
      // After postMessage: when it throws (a value that cannot be cloned), nothing is left waiting.
      if (this.#waiting.size === 0) this.#worker.ref();
      this.#waiting.set(id, { resolve, reject });
    });
  }

  /**
   * Releases the session (after the requests already sent), then terminates the worker, which returns
   * whatever native memory is left; resolves once the thread has exited. Idempotent; requests sent
   * afterwards fail with a SessionGoneError. Rejects with the worker's error if the release failed.
   */
  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    if (this.#refusal !== undefined) {
      await this.#exited;
      return;
    }
    const released = this.request({ type: "release" });
    this.#refusal = new SessionGoneError("released", `the session of ${this.#label} was released`);
    try {
      await released;
    } finally {
      await this.#worker.terminate();
      await this.#exited;
    }
  }

  #answer(reply: Envelope<SessionReply>): void {
    const waiter = this.#waiting.get(reply.id);
    // A reply that nobody waits for any more (its worker failed meanwhile) is dropped.
    if (waiter === undefined) return;
    this.#waiting.delete(reply.id);
    if (this.#waiting.size === 0) this.#worker.unref();
    if (reply.type === "error") waiter.reject(new WorkerFailure(reply.message, reply.parts));
    else waiter.resolve(reply);
  }

  #died(how: string): SessionGoneError {
    return new SessionGoneError("exited", `the onnxruntime worker of ${this.#label} ${how}`);
  }

  /** Refuses later requests (keeping the first reason) and fails the waiting ones. */
  #fail(error: SessionGoneError): void {
    this.#refusal ??= error;
    for (const waiter of this.#waiting.values()) waiter.reject(error);
    this.#waiting.clear();
    this.#worker.unref();
  }
}
