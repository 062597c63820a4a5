import type { ReplicaState } from "../../shared/protocol/replica-state.ts";

/** At most one state frame per this many milliseconds: a burst of changes becomes one frame. */
export const STATE_FRAME_INTERVAL_MS = 50;

/**
 * Turns replica changes into state frames for the gateway. Changes come in bursts (a request starts, a model
 * starts loading, finishes, the run ends), so they are coalesced: the first change of a quiet period goes out
 * at once, later ones wait for the interval, and the frame is built when it is sent, from every replica's
 * state at that moment, so the gateway never receives a stale picture.
 */
export class StateReporter {
  readonly #states: () => ReplicaState[];
  readonly #send: (states: ReplicaState[]) => void;
  #lastSentAt = Number.NEGATIVE_INFINITY;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #active = false;

  constructor(states: () => ReplicaState[], send: (states: ReplicaState[]) => void) {
    this.#states = states;
    this.#send = send;
  }

  /** Starts reporting (once the gateway has welcomed the agent); the hello already carried the state. */
  start(): void {
    this.#active = true;
    this.#lastSentAt = Date.now();
  }

  /** Stops reporting, for instance while disconnected: the next hello carries the full state anyway. */
  stop(): void {
    this.#active = false;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  /** A replica changed. */
  changed(): void {
    if (!this.#active || this.#timer !== undefined) return;
    const wait = this.#lastSentAt + STATE_FRAME_INTERVAL_MS - Date.now();
    if (wait <= 0) {
      this.#flush();
      return;
    }
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#flush();
    }, wait);
    this.#timer.unref();
  }

  #flush(): void {
    if (!this.#active) return;
    this.#lastSentAt = Date.now();
    this.#send(this.#states());
  }
}
