/**
 * Reconnect delays: exponential with full jitter (AWS's "full jitter": a uniform pick between 0 and the
 * exponential ceiling), so that a fleet of agents cut off by one gateway restart does not knock on its door
 * in lockstep. The ceiling doubles from `initialMs` up to `maxMs`; a connection that stayed up for
 * `stableMs` resets it, so one blip after days of uptime is retried at once.
 */
export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  stableMs: number;
  random?: () => number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { initialMs: 500, maxMs: 30_000, stableMs: 60_000 };

export class Backoff {
  readonly #options: BackoffOptions;
  readonly #random: () => number;
  #attempt = 0;

  constructor(options: BackoffOptions = DEFAULT_BACKOFF) {
    this.#options = options;
    this.#random = options.random ?? Math.random;
  }

  /** The wait before the next attempt; each call raises the ceiling for the one after. */
  next(): number {
    const ceiling = Math.min(this.#options.maxMs, this.#options.initialMs * 2 ** this.#attempt);
    if (ceiling < this.#options.maxMs) this.#attempt += 1;
    return Math.round(this.#random() * ceiling);
  }

  /** Called when a connection ends after `upMs` of being established. */
  connectionEnded(upMs: number): void {
    if (upMs >= this.#options.stableMs) this.#attempt = 0;
  }
}
