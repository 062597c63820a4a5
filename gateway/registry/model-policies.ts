import { z } from "zod";
import type { PolicyDefaults } from "../models/model-store.ts";

const PREFIX = "policy:";

/**
 * An admin's override of a model's serving policy in this pool (PUT /admin/models/{m}/policy, or OIP
 * load/unload for min_copies). `maxCopies` null: no cap, whatever config.json says.
 */
const OverrideSchema = z.object({
  maxCopies: z.int().positive().nullable().optional(),
  minCopies: z.int().nonnegative().optional(),
  /** How long idle copies stay loaded on the agents (over config.json's keep_alive_s and --keep-alive). */
  keepAliveMs: z.int().nonnegative().optional(),
});
export type PolicyOverride = z.infer<typeof OverrideSchema>;

/**
 * Each model's serving policy as this registry applies it: an admin's override where there is one, else
 * the model's config.json (PolicyDefaultsCache), else none. Overrides live in the registry's storage, read
 * once and kept in memory, since the scheduler asks for max_copies on every request. The pins that make
 * min_copies real are model-pins.ts's.
 */
export class ModelPolicies {
  readonly #kv: SyncKvStorage;
  readonly #defaults: (model: string) => PolicyDefaults | undefined;
  readonly #overrides = new Map<string, PolicyOverride>();

  constructor(kv: SyncKvStorage, defaults: (model: string) => PolicyDefaults | undefined) {
    this.#kv = kv;
    this.#defaults = defaults;
    for (const [key, value] of kv.list({ prefix: PREFIX })) {
      const parsed = OverrideSchema.safeParse(value);
      if (parsed.success) this.#overrides.set(key.slice(PREFIX.length), parsed.data);
    }
  }

  maxCopies(model: string): number | undefined {
    const override = this.#overrides.get(model)?.maxCopies;
    if (override !== undefined) return override ?? undefined;
    return this.#defaults(model)?.maxCopies;
  }

  /** The copies to keep pinned, and whether an admin said so (else config.json, or nothing: undefined). */
  minCopies(model: string): { copies: number; overridden: boolean } | undefined {
    const override = this.#overrides.get(model)?.minCopies;
    if (override !== undefined) return { copies: override, overridden: true };
    const copies = this.#defaults(model)?.minCopies;
    return copies === undefined ? undefined : { copies, overridden: false };
  }

  /** The keep-alive the admin set for the model, if any. */
  keepAliveMs(model: string): number | undefined {
    return this.#overrides.get(model)?.keepAliveMs;
  }

  /** Every model with an override. */
  overridden(): string[] {
    return [...this.#overrides.keys()];
  }

  /** Sets the keys given (others stay as they were; a keepAliveMs of undefined drops that one). */
  override(model: string, change: PolicyOverride): void {
    const next = { ...this.#overrides.get(model), ...change };
    if ("keepAliveMs" in change && change.keepAliveMs === undefined) delete next.keepAliveMs;
    this.#kv.put(`${PREFIX}${model}`, next);
    this.#overrides.set(model, next);
  }

  /** Drops the min_copies override alone (a pin that could not be placed). */
  forgetMinCopies(model: string): void {
    const known = this.#overrides.get(model);
    if (known === undefined) return;
    const rest = { ...known };
    delete rest.minCopies;
    if (Object.keys(rest).length === 0) this.clear(model);
    else {
      this.#kv.put(`${PREFIX}${model}`, rest);
      this.#overrides.set(model, rest);
    }
  }

  /** Drops the model's overrides: its config.json's policy applies again. */
  clear(model: string): void {
    this.#kv.delete(`${PREFIX}${model}`);
    this.#overrides.delete(model);
  }
}
