/** How long a hint found nowhere is not looked for across shards. */
const FORGET_AFTER_MS = 30_000;
/** Hints remembered at most; past it the oldest are forgotten (hints come from clients). */
const MAX_HINTS = 1_000;

/**
 * Runner hints that no registry shard advertised when an ask looked for one (shard-walk.ts), kept in one
 * Worker isolate's memory for a while. Looking for a hint costs an ask per shard; clients that send a hint
 * on every request that no agent advertises (Ray's serve_multiplexed_model_id names a model, and agents
 * rarely advertise those) would pay it every time. Forgetting is harmless: a hint an agent starts to
 * advertise is looked for again at most FORGET_AFTER_MS later, and meanwhile requests route by their model.
 */
export class UnadvertisedHints {
  readonly #until = new Map<string, number>();

  has(hint: string, now: number): boolean {
    const until = this.#until.get(hint);
    if (until === undefined) return false;
    if (until > now) return true;
    this.#until.delete(hint);
    return false;
  }

  add(hint: string, now: number): void {
    this.#until.delete(hint);
    this.#until.set(hint, now + FORGET_AFTER_MS);
    // A Map iterates in insertion order: the first key is the oldest.
    while (this.#until.size > MAX_HINTS) {
      const oldest = this.#until.keys().next().value;
      if (oldest === undefined) break;
      this.#until.delete(oldest);
    }
  }
}
