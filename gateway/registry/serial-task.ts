/**
 * Work that runs one at a time and catches up: a request to run while it runs asks for one more run after
 * it, however many requests came meanwhile (pins placed again after agents join, policies applied after
 * their defaults changed). Its failures are reported, never thrown: no caller waits for it.
 */
export class SerialTask {
  readonly #work: () => Promise<void>;
  readonly #failed: (error: unknown) => void;
  #running: Promise<void> | undefined;
  #again = false;

  constructor(work: () => Promise<void>, failed: (error: unknown) => void) {
    this.#work = work;
    this.#failed = failed;
  }

  run(): void {
    if (this.#running !== undefined) {
      this.#again = true;
      return;
    }
    this.#running = this.#work()
      .catch(this.#failed)
      .finally(() => {
        this.#running = undefined;
        if (this.#again) {
          this.#again = false;
          this.run();
        }
      });
  }
}
