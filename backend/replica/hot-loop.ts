/**
 * Spinning: a thread that served a request keeps its event loop turning for a short window instead of
 * sleeping in its poll, so that the next request, or the answer it waits for, finds it awake. On the H200
 * host a small MLP's onnxruntime run took 0.14-0.15 ms right after its thread slept 0.3-1 ms against
 * 0.08 ms when it had kept turning, and a message to a sleeping thread and back 44 us against 13 us: with
 * the session threads and HTTP intake threads spinning, the MLP over HTTP at one client went from 0.68-0.87
 * to 0.25-0.34 ms at p50 (bench/results/hot-path-cuda-spin.md). The window ends by itself: an idle agent
 * sleeps as before. Only with a GPU: on the CPU the cores a spinning thread takes are the ones onnxruntime
 * computes on (and its own threads spin there already).
 */
import type { ReplicaDevice } from "./device.ts";

/**
 * The window threads serving `devices` spin for: --spin-ms when a GPU is among them, else 0 (never).
 * The one owner of that rule: a replica's session threads get it for their own device, the HTTP intake
 * threads (and the main thread when it serves HTTP itself) for all of the agent's.
 */
export function spinWindowMs(spinMs: number, devices: readonly ReplicaDevice[]): number {
  return devices.some((device) => device.kind === "cuda") ? spinMs : 0;
}

export class HotLoop {
  readonly #windowMs: number;
  /** performance.now() at which the window ends. */
  #until = 0;
  #spinning = false;

  /** `windowMs` 0: never spins. */
  constructor(windowMs: number) {
    this.#windowMs = windowMs;
  }

  /**
   * The thread just did work (a request arrived, a run began or ended): it spins until `windowMs` after
   * now. Each turn of the spin is one setImmediate: while one is pending, the loop polls for I/O and
   * messages without blocking, and runs timers and callbacks as usual in between.
   */
  touch(): void {
    if (this.#windowMs <= 0) return;
    this.#until = performance.now() + this.#windowMs;
    if (this.#spinning) return;
    this.#spinning = true;
    const turn = () => {
      if (performance.now() < this.#until) setImmediate(turn);
      else this.#spinning = false;
    };
    setImmediate(turn);
  }
}
