/**
 * What the calls of one HTTP/2 connection may hold of their request messages: the bytes received of
 * messages not yet whole, and whole messages not yet answered. HTTP/2 lets a client open any number of
 * streams on one connection, each sending a message of up to --max-body, and the agent reads what arrives
 * (which reopens the client's window): without a bound, one connection could make the agent hold streams x
 * --max-body. Over the bound, a call's stream is no longer read until answers free bytes: paused, it gets
 * no more window, so its client stops once it has sent what it was given (the HTTP/2 windows of
 * grpc-transport.ts: at most 8 MiB a stream and 32 MiB the connection, held in Node's buffers).
 *
 * Waiting for answers frees bytes only while whole messages are held. When all that is held is messages
 * still arriving, one of them must go on or none would ever be whole: the one that began first (it was
 * received furthest), so a connection always moves.
 */
export class ReceiveBudget<Caller> {
  readonly #limit: number;
  #whole = 0;
  #partialTotal = 0;
  /** Each caller's bytes of a message not yet whole, in the order those messages began. */
  readonly #partial = new Map<Caller, number>();
  /** Callers not read until this budget lets them, with what resumes each. */
  readonly #waiting = new Map<Caller, () => void>();

  /** `limit`: bytes held above which a caller waits (a message of any size allowed still arrives whole). */
  constructor(limit: number) {
    this.#limit = limit;
  }

  get heldBytes(): number {
    return this.#whole + this.#partialTotal;
  }

  /**
   * `caller` holds `bytes` of a message not yet whole (0: none); `began`: that message began since the
   * caller's last report, so it takes its place behind the messages already arriving.
   */
  arriving(caller: Caller, bytes: number, began: boolean): void {
    this.#partialTotal += bytes - (this.#partial.get(caller) ?? 0);
    if (began || bytes === 0) this.#partial.delete(caller);
    if (bytes > 0) this.#partial.set(caller, bytes);
    this.#wake();
  }

  /** A whole message of `bytes` is held; the returned function gives it back (once, however often called). */
  holdWhole(bytes: number): () => void {
    this.#whole += bytes;
    let given = false;
    return () => {
      if (given) return;
      given = true;
      this.#whole -= bytes;
      this.#wake();
    };
  }

  /** Whether `caller` may be read now. */
  mayRead(caller: Caller): boolean {
    if (this.heldBytes <= this.#limit) return true;
    // Nothing an answer will free: the message that began first goes on.
    return this.#whole === 0 && this.#partial.keys().next().value === caller;
  }

  /** `caller` is not read until `resume` is called, once this budget lets it. */
  wait(caller: Caller, resume: () => void): void {
    this.#waiting.set(caller, resume);
    this.#wake();
  }

  /** The caller ended: what it held of a message still arriving is freed, and it waits no more. */
  forget(caller: Caller): void {
    this.#waiting.delete(caller);
    this.arriving(caller, 0, false);
  }

  #wake(): void {
    for (const [caller, resume] of this.#waiting) {
      if (!this.mayRead(caller)) continue;
      this.#waiting.delete(caller);
      resume();
    }
  }
}
