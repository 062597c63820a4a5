import { HEARTBEAT_PING, MISSED_HEARTBEATS } from "../../shared/protocol/heartbeat.ts";

/**
 * Sends "ping" every interval and watches for signs of life. A TCP connection through NATs and proxies can
 * die without a close ever arriving; without this the agent would sit on a dead socket while the gateway
 * has long since forgotten it. Any frame from the gateway counts as a sign of life, not only "pong".
 *
 * Silence is counted in beats, not in wall-clock time: when the event loop was held for a while (a large JSON
 * body parsed, a machine short of CPU; runs themselves are on the sessions' threads), the timer runs before
 * the socket's pending messages are read, so a clock would take a healthy gateway for a dead one after every
 * stall. A held loop costs at most one beat.
 */
export class Heartbeat {
  readonly #timer: ReturnType<typeof setInterval>;
  #heardSinceLastBeat = true;
  #missed = 0;

  constructor(options: {
    intervalMs: number;
    send: (text: string) => void;
    onDead: (silentBeats: number) => void;
  }) {
    this.#timer = setInterval(() => {
      this.#missed = this.#heardSinceLastBeat ? 0 : this.#missed + 1;
      this.#heardSinceLastBeat = false;
      if (this.#missed >= MISSED_HEARTBEATS) {
        this.stop();
        options.onDead(this.#missed);
        return;
      }
      options.send(HEARTBEAT_PING);
    }, options.intervalMs);
    this.#timer.unref();
  }

  heard(): void {
    this.#heardSinceLastBeat = true;
  }

  stop(): void {
    clearInterval(this.#timer);
  }
}
