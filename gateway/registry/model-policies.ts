import { z } from "zod";

const PREFIX = "policy:";

/** What a registry keeps of a model's serving policy beside its pins (model-pins.ts keeps min_copies). */
const StoredPolicySchema = z.object({ maxCopies: z.int().positive() });
export type StoredPolicy = z.infer<typeof StoredPolicySchema>;

/**
 * Each model's max_copies as an admin set it (`PUT /admin/models/{m}/policy`), in the registry's storage, so
 * that it outlives restarts; read once, then kept in memory, since the scheduler asks for it on every request.
 * min_copies is the model's pin (model-pins.ts): OIP `load` and the policy set the same thing.
 */
export class ModelPolicies {
  readonly #kv: SyncKvStorage;
  readonly #policies = new Map<string, StoredPolicy>();

  constructor(kv: SyncKvStorage) {
    this.#kv = kv;
    for (const [key, value] of kv.list({ prefix: PREFIX })) {
      const parsed = StoredPolicySchema.safeParse(value);
      if (parsed.success) this.#policies.set(key.slice(PREFIX.length), parsed.data);
    }
  }

  /** Every model with a max_copies. */
  all(): Array<{ model: string; maxCopies: number }> {
    return [...this.#policies].map(([model, policy]) => ({ model, maxCopies: policy.maxCopies }));
  }

  maxCopies(model: string): number | undefined {
    return this.#policies.get(model)?.maxCopies;
  }

  /** Sets the model's max_copies; undefined takes the cap away. */
  setMaxCopies(model: string, maxCopies: number | undefined): void {
    if (maxCopies === undefined) {
      this.#kv.delete(`${PREFIX}${model}`);
      this.#policies.delete(model);
      return;
    }
    const policy = { maxCopies };
    this.#kv.put(`${PREFIX}${model}`, policy);
    this.#policies.set(model, policy);
  }
}
