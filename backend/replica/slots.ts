/**
 * A replica's concurrency slots: at most `capacity` requests run at once, the rest wait in arrival order.
 * A waiter whose signal aborts leaves the line without taking a slot.
 */
export class Slots {
  readonly capacity: number;
  #inUse = 0;
  readonly #waiters: Array<() => void> = [];
  readonly #onChange: () => void;

  constructor(capacity: number, onChange: () => void) {
    this.capacity = capacity;
    this.#onChange = onChange;
  }

  get inUse(): number {
    return this.#inUse;
  }

  get waiting(): number {
    return this.#waiters.length;
  }

  /** Resolves with a release function once a slot is free. */
  async acquire(signal?: AbortSignal): Promise<() => void> {
    if (this.#inUse < this.capacity && this.#waiters.length === 0) {
      this.#inUse += 1;
      this.#onChange();
      return this.#releaser();
    }
    await new Promise<void>((resolve, reject) => {
      const grant = () => {
        signal?.removeEventListener("abort", abandon);
        resolve();
      };
      const abandon = () => {
        const index = this.#waiters.indexOf(grant);
        if (index >= 0) this.#waiters.splice(index, 1);
        this.#onChange();
        reject(signal?.reason);
      };
      signal?.addEventListener("abort", abandon, { once: true });
      this.#waiters.push(grant);
      this.#onChange();
    });
    return this.#releaser();
  }

  #releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.#waiters.shift();
      // The slot passes straight to the next waiter, so a newcomer cannot overtake the line.
      if (next === undefined) this.#inUse -= 1;
      else next();
      this.#onChange();
    };
  }
}
