/**
 * Messages to another thread, gathered over one turn of the event loop and sent as one array. At thousands
 * of small requests a second each postMessage's fixed cost (a lock, a wake-up of the other thread, one
 * message event there) was the largest item of the standalone main thread's profile; a turn's messages to
 * the same thread share it (bench/results/hot-path-cpu-main-thread.md).
 *
 * The batch leaves in the turn's check phase (setImmediate): after every socket and message callback that
 * the turn's poll phase ran, so requests read from several connections in one turn travel together, and no
 * later than a timer could fire.
 */

/** The sending end: a Worker, a MessagePort or a worker's parentPort. */
export interface MailPort {
  postMessage(value: unknown, transfer?: readonly ArrayBuffer[]): void;
}

export class TickMailbox<M> {
  readonly #port: MailPort;
  readonly #undeliverable: (message: M, error: unknown) => void;
  #messages: M[] = [];
  #transfer: ArrayBuffer[] = [];
  #due = false;

  /**
   * `undeliverable` hears of each message that could not be sent (one that cannot be cloned, a buffer
   * already moved); the batch's other messages still go.
   */
  constructor(port: MailPort, undeliverable: (message: M, error: unknown) => void) {
    this.#port = port;
    this.#undeliverable = undeliverable;
  }

  /** Sends `message` with this turn's others; the buffers in `transfer` move with it (detached here). */
  post(message: M, transfer: readonly ArrayBuffer[] = []): void {
    this.#messages.push(message);
    for (const buffer of transfer) this.#transfer.push(buffer);
    if (this.#due) return;
    this.#due = true;
    setImmediate(() => this.flush());
  }

  /** Sends what is gathered now (a message that must not wait for the turn's end, or before closing). */
  flush(): void {
    this.#due = false;
    const messages = this.#messages;
    const transfer = this.#transfer;
    if (messages.length === 0) return;
    this.#messages = [];
    this.#transfer = [];
    try {
      this.#port.postMessage(messages, transfer);
    } catch {
      // Nothing was sent or moved: one by one, so that only the message at fault is lost.
      for (const message of messages) this.#postAlone(message, transfer);
    }
  }

  #postAlone(message: M, transfer: readonly ArrayBuffer[]): void {
    try {
      // Its own buffers only: the others' stay here for their own messages.
      this.#port.postMessage(
        [message],
        transfer.filter((buffer) => referencedBy(message, buffer)),
      );
    } catch (error) {
      this.#undeliverable(message, error);
    }
  }
}

/** Whether `buffer` is under any typed array (or is an ArrayBuffer) reachable from `value`. */
function referencedBy(value: unknown, buffer: ArrayBuffer, seen = new Set<unknown>()): boolean {
  if (value === buffer) return true;
  if (ArrayBuffer.isView(value)) return value.buffer === buffer;
  if (typeof value !== "object" || value === null || seen.has(value)) return false;
  seen.add(value);
  const children = Array.isArray(value) ? value : Object.values(value);
  return children.some((child) => referencedBy(child, buffer, seen));
}

/** The receiving end: each message of a batch TickMailbox sent, in order. */
export function eachMessage<M>(handle: (message: M) => void): (batch: M[]) => void {
  return (batch) => {
    for (const message of batch) handle(message);
  };
}
