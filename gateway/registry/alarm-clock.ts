/**
 * The registry's one Durable Object alarm, armed for the earliest moment anything needs it (a heartbeat
 * check while requests are in flight, a routing policy's bounded wait). Setting an alarm is a storage
 * write, so it is set only when the wanted time is earlier than the one already armed; an alarm that fires
 * early finds nothing to do and arms the next one. An alarm survives the object's eviction, so after a
 * restart the worst case is one needless wake.
 */
export class AlarmClock {
  readonly #storage: DurableObjectStorage;
  readonly #log: (event: string, fields: Record<string, unknown>) => void;
  /** When the armed alarm fires (epoch ms), as far as this instance knows. */
  #armedFor: number | undefined;

  readonly #onSet: () => void;

  constructor(
    storage: DurableObjectStorage,
    log: (event: string, fields: Record<string, unknown>) => void,
    onSet: () => void = () => {},
  ) {
    this.#storage = storage;
    this.#log = log;
    this.#onSet = onSet;
  }

  /** Makes sure the alarm fires at `at` or earlier. */
  armBy(at: number): void {
    if (this.#armedFor !== undefined && this.#armedFor <= at) return;
    this.#armedFor = at;
    this.#onSet();
    this.#storage.setAlarm(at).catch((error: unknown) => {
      this.#armedFor = undefined;
      this.#log("alarm-not-set", { error: String(error) });
    });
  }

  /** The alarm fired: nothing is armed any more. */
  fired(): void {
    this.#armedFor = undefined;
  }
}
