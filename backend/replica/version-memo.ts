import type { ModelRef } from "../../shared/protocol/replica-state.ts";

/**
 * Which version a model name (or name:version) resolved to, kept so that requests need not each read the
 * repository (a directory listing, stats, the config file: about 0.1 ms locally, and a trip through the
 * thread pool that spreads a burst of requests over several turns of the event loop, so they no longer
 * meet in one batch). An answer older than `refreshMs` is still used once, while the repository is read
 * again in the background: a version copied in shows up about `refreshMs` later.
 */
export class VersionMemo {
  readonly #refreshMs: number;
  readonly #now: () => number;
  readonly #known = new Map<string, { ref: ModelRef; at: number; refreshing: boolean }>();

  constructor(refreshMs: number, now: () => number = () => performance.now()) {
    this.#refreshMs = refreshMs;
    this.#now = now;
  }

  /**
   * The remembered answer (refreshed through `resolve` when stale), or the answer of `resolve` when there
   * is none yet. A failed refresh forgets the answer, so the next request sees the failure.
   */
  async resolve(key: string, resolve: () => Promise<ModelRef>): Promise<ModelRef> {
    const known = this.#known.get(key);
    if (known === undefined) {
      const ref = await resolve();
      this.set(key, ref);
      return ref;
    }
    if (!known.refreshing && this.#now() - known.at > this.#refreshMs) {
      known.refreshing = true;
      resolve().then(
        (ref) => this.set(key, ref),
        () => this.#known.delete(key),
      );
    }
    return known.ref;
  }

  set(key: string, ref: ModelRef): void {
    this.#known.set(key, { ref, at: this.#now(), refreshing: false });
  }
}
