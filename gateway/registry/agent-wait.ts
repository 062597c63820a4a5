export interface AgentWaitOptions<P> {
  now: () => number;
  /** Until when agents are expected back; undefined when none is. */
  expectedBackUntil: (now: number) => number | undefined;
  /** The agents' grace ran out with these requests still waiting. */
  giveUp: (waiting: P[]) => void;
}

/**
 * Requests that found no agent while agents are expected back (pool-presence.ts: the pool had agents, and
 * their grace has not run out, as after a registry restart or a network blip). Each waits until an agent
 * serves again (`release`), its own deadline (the relay's), or the end of the agents' grace, when every
 * waiting request is given up at once.
 */
export class AgentWait<P> {
  readonly #options: AgentWaitOptions<P>;
  readonly #waiting = new Set<P>();
  #timer: ReturnType<typeof setTimeout> | undefined;

  constructor(options: AgentWaitOptions<P>) {
    this.#options = options;
  }

  get size(): number {
    return this.#waiting.size;
  }

  has(request: P): boolean {
    return this.#waiting.has(request);
  }

  delete(request: P): void {
    this.#waiting.delete(request);
  }

  /** Until when agents are expected back (a request may wait for them); undefined when none is. */
  expectedUntil(): number | undefined {
    return this.#options.expectedBackUntil(this.#options.now());
  }

  /** Keeps the request until agents serve again, or the grace that expectedUntil() gave ends. */
  wait(request: P, until: number): void {
    this.#waiting.add(request);
    this.#arm(until);
  }

  /** Agents serve again: every waiting request, to be routed now. */
  release(): P[] {
    const waiting = [...this.#waiting];
    this.#waiting.clear();
    this.#stop();
    return waiting;
  }

  #arm(until: number): void {
    this.#stop();
    this.#timer = setTimeout(() => this.#graceOver(), Math.max(0, until - this.#options.now()));
  }

  #stop(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  #graceOver(): void {
    this.#timer = undefined;
    const until = this.#options.expectedBackUntil(this.#options.now());
    // The grace was extended meanwhile (another agent came and went).
    if (until !== undefined) {
      this.#arm(until);
      return;
    }
    const waiting = [...this.#waiting];
    this.#waiting.clear();
    this.#options.giveUp(waiting);
  }
}
