/**
 * Whether agents are expected back in a pool that has none serving right now. Agents leave for a moment
 * all the time: an agent restarts (a deploy, a crash), every agent of a small pool drains for a rolling
 * restart, or the registry itself restarts and drops every socket, after which the agents dial in again
 * within seconds. A request arriving in such a gap should wait for them (up to its deadline) rather than
 * fail, as cloudflared's connectors get a grace period. A pool that had no agent for longer than the grace
 * answers 503 at once, as before.
 *
 * The record lives in the Durable Object's storage, because the interesting case is a registry that lost
 * its memory: it finds a record saying agents were serving, no socket, and so knows they are on their way
 * back. It is written only when the pool goes from some serving agents to none or back, never per request.
 */
const KEY = "presence";

interface PresenceRecord {
  /** Whether agents were serving when the record was written. */
  serving: boolean;
  /** When it was written (epoch ms). */
  at: number;
}

export class PoolPresence {
  readonly #kv: SyncKvStorage;
  readonly #graceMs: number;
  #stored: PresenceRecord | undefined;
  #started = false;
  #serving = false;
  /** Agents are expected back until then (epoch ms); 0 when not. */
  #expectedUntil = 0;

  constructor(kv: SyncKvStorage, graceMs: number) {
    this.#kv = kv;
    this.#graceMs = graceMs;
    this.#stored = kv.get<PresenceRecord>(KEY);
  }

  /**
   * Called once this registry instance has rebuilt its pool from its sockets (hibernation keeps them;
   * an eviction with sockets dropped, a restart or a crash does not): `servingAgents` is what it found.
   */
  start(servingAgents: number, now: number): void {
    this.#started = true;
    this.#serving = servingAgents > 0;
    const stored = this.#stored;
    if (!this.#serving && stored !== undefined) {
      // Serving when the previous instance last wrote: it went away with its sockets and the agents are
      // reconnecting now. Otherwise the last of them left at `stored.at`.
      this.#expectedUntil = (stored.serving ? now : stored.at) + this.#graceMs;
    }
    // A pool that never had agents has no record, and gets none until one joins.
    if (this.#serving !== (stored?.serving ?? false)) this.#write(this.#serving, now);
  }

  /** The number of serving (connected, not draining) agents changed. */
  update(servingAgents: number, now: number): void {
    const serving = servingAgents > 0;
    if (!this.#started || serving === this.#serving) return;
    this.#serving = serving;
    this.#expectedUntil = serving ? 0 : now + this.#graceMs;
    this.#write(serving, now);
  }

  /** Until when requests should wait for agents (epoch ms), or undefined when none are expected. */
  expectedBackUntil(now: number): number | undefined {
    return !this.#serving && this.#expectedUntil > now ? this.#expectedUntil : undefined;
  }

  #write(serving: boolean, at: number): void {
    this.#stored = { serving, at };
    this.#kv.put(KEY, this.#stored);
  }
}
