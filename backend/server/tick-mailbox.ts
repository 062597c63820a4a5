/**
 * Messages to another thread, gathered (over one turn of the event loop, or one task) and sent as one array.
 * At thousands of small requests a second each postMessage's fixed cost (a lock, a wake-up of the other
 * thread, one message event there) was the largest item of the standalone main thread's profile; a turn's
 * messages to the same thread share it (bench/results/hot-path-cpu-main-thread.md).
 *
 * By default the batch leaves in the turn's check phase (setImmediate): after every socket and message
 * callback that the turn's poll phase ran, so requests read from several connections in one turn travel
 * together. (What is posted during a check phase itself leaves in the next turn's.) A mailbox whose messages
 * are all posted by one task (a callback and the promise reactions it sets off) gathers over that task
 * instead (Gather), so that they do not wait for the next turn's poll phase and all it handles first.
 */
import type { TransferListItem } from "node:worker_threads";

/** The sending end: a Worker, a MessagePort or a worker's parentPort. */
export interface MailPort {
  postMessage(value: unknown, transfer?: readonly TransferListItem[]): void;
}

/**
 * What one batch gathers: the turn's messages (the default), or the task's, leaving right after the task's
 * promise reactions: a process.nextTick queued from a reaction runs once the microtask queue is empty (one
 * queued by the callback itself would run before its reactions, hence the microtask in between). Promise
 * reactions only: what the task defers with process.nextTick runs after that flush, and what it posts then
 * leaves in a batch of its own.
 */
export type Gather = "turn" | "task";

export class TickMailbox<M> {
  readonly #port: MailPort;
  readonly #undeliverable: (message: M, error: unknown) => void;
  /** The messages gathered so far (this turn's, or this task's), each with the buffers that move with it. */
  #mail: { message: M; transfer: readonly TransferListItem[] }[] = [];
  #due = false;
  readonly #schedule: (flush: () => void) => void;

  /**
   * `undeliverable` hears of each message that could not be sent (one that cannot be cloned, a buffer
   * already moved); the batch's other messages still go.
   */
  constructor(port: MailPort, undeliverable: (message: M, error: unknown) => void, gather: Gather = "turn") {
    this.#port = port;
    this.#undeliverable = undeliverable;
    this.#schedule =
      gather === "turn"
        ? (flush) => setImmediate(flush)
        : (flush) => queueMicrotask(() => process.nextTick(flush));
  }

  /** Sends `message` with the others gathered; the buffers in `transfer` move with it (detached here). */
  post(message: M, transfer: readonly TransferListItem[] = []): void {
    this.#mail.push({ message, transfer });
    if (this.#due) return;
    this.#due = true;
    this.#schedule(() => this.flush());
  }

  /** Sends what is gathered now (a message that must not wait for the turn's end, or before closing). */
  flush(): void {
    this.#due = false;
    const mail = this.#mail;
    if (mail.length === 0) return;
    this.#mail = [];
    try {
      this.#port.postMessage(
        mail.map(({ message }) => message),
        mail.flatMap(({ transfer }) => transfer),
      );
    } catch {
      // Nothing was sent or moved: one by one, each with its own buffers, so that only the message at fault
      // is lost.
      for (const { message, transfer } of mail) this.#postAlone(message, transfer);
    }
  }

  #postAlone(message: M, transfer: readonly TransferListItem[]): void {
    try {
      this.#port.postMessage([message], transfer);
    } catch (error) {
      try {
        this.#undeliverable(message, error);
      } catch (failure) {
        // In a setImmediate or a nextTick callback: thrown on, it would end the process.
        console.error("tick mailbox: a message could not be sent, nor its failure told", failure);
      }
    }
  }
}

/** The receiving end: each message of a batch TickMailbox sent, in order. */
export function eachMessage<M>(handle: (message: M) => void): (batch: M[]) => void {
  return (batch) => {
    for (const message of batch) handle(message);
  };
}
