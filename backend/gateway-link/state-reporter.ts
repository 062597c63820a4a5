import type { ReplicaState } from "../../shared/protocol/replica-state.ts";

/** At most one state frame per this many milliseconds: a burst of changes becomes one frame. */
export const STATE_FRAME_INTERVAL_MS = 50;

/**
 * A state frame carries every model's timings when the last one that did (or the hello) is this old; the
 * others carry only what changed (ReplicaState.timings). Whatever the gateway lost of them (a result dropped on
 * its way, a registry restarted before it saved them) comes back within this long of the agent's next change.
 */
export const WHOLE_TIMINGS_EVERY_MS = 60_000;

/**
 * Turns replica changes into state frames for the gateway. Changes come in bursts (a request starts, a model
 * starts loading, finishes, the run ends), so they are coalesced: the first change of a quiet period goes out
 * at once, later ones wait for the interval, and the frame is built when it is sent, from every replica's
 * state at that moment, so the gateway never receives a stale picture.
 */
export class StateReporter {
  readonly #states: (whole: boolean) => ReplicaState[];
  readonly #send: (states: ReplicaState[]) => void;
  readonly #now: () => number;
  #lastSentAt = Number.NEGATIVE_INFINITY;
  /** When a frame (or the hello) last carried every model's timings. */
  #wholeAt = Number.NEGATIVE_INFINITY;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #active = false;

  /** `states(whole)`: the replicas' states for a frame, with every model's timings when `whole`. */
  constructor(
    states: (whole: boolean) => ReplicaState[],
    send: (states: ReplicaState[]) => void,
    now: () => number = Date.now,
  ) {
    this.#states = states;
    this.#send = send;
    this.#now = now;
  }

  /** Starts reporting (once the gateway has welcomed the agent); the hello already carried the whole state. */
  start(): void {
    this.#active = true;
    this.#lastSentAt = this.#now();
    this.#wholeAt = this.#lastSentAt;
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
    const wait = this.#lastSentAt + STATE_FRAME_INTERVAL_MS - this.#now();
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
    this.#lastSentAt = this.#now();
    const whole = this.#lastSentAt - this.#wholeAt >= WHOLE_TIMINGS_EVERY_MS;
    if (whole) this.#wholeAt = this.#lastSentAt;
    this.#send(this.#states(whole));
  }
}
