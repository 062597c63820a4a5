import { z } from "zod";
import type { PolicyDefaults } from "../models/model-store.ts";

/** Stored so that a registry that just woke routes under the defaults it last read. */
const KEY = "policy-defaults";
/** A registry reads the repository's defaults again at most this often, when requests come. */
export const DEFAULTS_REFRESH_MS = 30_000;

const StoredSchema = z.record(
  z.string(),
  z.object({ minCopies: z.int().nonnegative().optional(), maxCopies: z.int().positive().optional() }),
);

export interface PolicyDefaultsOptions {
  kv: SyncKvStorage;
  /** Every model's defaults from the repository (model-store.ts listPolicyDefaults). */
  read: () => Promise<Map<string, PolicyDefaults>>;
  /** The defaults changed: pins may be due. */
  changed: () => void;
  log: (event: string, fields: Record<string, unknown>) => void;
}

/**
 * Each model's serving policy as its config.json in the gateway's repository sets it, as a registry knows it:
 * read from one R2 listing when the instance first needs it (an agent joins, an admin reads a policy), then at
 * most every DEFAULTS_REFRESH_MS while requests come (never on a request's path: the request routes under what
 * is known), and kept in storage for the next instance. An idle pool reads again when it next wakes for work.
 */
export class PolicyDefaultsCache {
  readonly #options: PolicyDefaultsOptions;
  #defaults: Map<string, PolicyDefaults>;
  #readAt = Number.NEGATIVE_INFINITY;
  #reading: Promise<void> | undefined;

  constructor(options: PolicyDefaultsOptions) {
    this.#options = options;
    const stored = StoredSchema.safeParse(options.kv.get(KEY));
    this.#defaults = new Map(stored.success ? Object.entries(stored.data) : []);
  }

  get(model: string): PolicyDefaults | undefined {
    return this.#defaults.get(model);
  }

  models(): string[] {
    return [...this.#defaults.keys()];
  }

  /** Reads the defaults again in the background when the last read is older than DEFAULTS_REFRESH_MS. */
  refreshIfStale(now: number): void {
    if (this.#reading !== undefined || now - this.#readAt < DEFAULTS_REFRESH_MS) return;
    void this.#read(now);
  }

  /** Reads the defaults unless this instance did already, or waits for the read under way. */
  readOnce(): Promise<void> {
    if (this.#reading !== undefined) return this.#reading;
    if (this.#readAt > Number.NEGATIVE_INFINITY) return Promise.resolve();
    return this.#read(Date.now());
  }

  /** One read at a time; a failed one is tried again at the next chance. */
  #read(now: number): Promise<void> {
    this.#readAt = now;
    this.#reading = this.refresh()
      .catch((error: unknown) => {
        this.#readAt = Number.NEGATIVE_INFINITY;
        this.#options.log("policy-defaults-not-read", { error: String(error) });
      })
      .finally(() => {
        this.#reading = undefined;
      });
    return this.#reading;
  }

  /** Reads the defaults now; `changed` hears of a difference. */
  async refresh(): Promise<void> {
    const read = await this.#options.read();
    const next = JSON.stringify(Object.fromEntries([...read].sort(([a], [b]) => (a < b ? -1 : 1))));
    const known = JSON.stringify(
      Object.fromEntries([...this.#defaults].sort(([a], [b]) => (a < b ? -1 : 1))),
    );
    if (next === known) return;
    this.#defaults = read;
    this.#options.kv.put(KEY, Object.fromEntries(read));
    this.#options.changed();
  }
}
