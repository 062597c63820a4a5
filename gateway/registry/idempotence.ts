import { modelKey, parseModelKey } from "../../shared/model-names.ts";
import type { ReplicaState } from "../../shared/protocol/replica-state.ts";

/**
 * Which models may be run twice. Inference is idempotent by default (config.json `idempotent`, default
 * true), so a request that a dead agent may have started is run once more elsewhere; a model whose config
 * says `"idempotent": false` (it writes somewhere, it bills, it is sampled with a side effect) never is.
 * Agents report the flag with each loaded model (replica-state.ts). What they reported is kept in storage,
 * pool-wide: a registry that restarted while such a request was in flight must still know not to rerun it.
 */
const PREFIX = "not-idempotent:";

export class Idempotence {
  readonly #kv: SyncKvStorage;
  /** "name:version" of every model reported not idempotent. */
  readonly #notIdempotent = new Set<string>();

  constructor(kv: SyncKvStorage) {
    this.#kv = kv;
    for (const [key] of kv.list({ prefix: PREFIX })) this.#notIdempotent.add(key.slice(PREFIX.length));
  }

  /** Learns from a replica's reported state. */
  note(replicas: readonly ReplicaState[]): void {
    for (const replica of replicas) {
      for (const model of replica.loaded) {
        if (model.idempotent !== false) continue;
        const key = modelKey(model);
        if (this.#notIdempotent.has(key)) continue;
        this.#notIdempotent.add(key);
        this.#kv.put(`${PREFIX}${key}`, true);
      }
    }
  }

  /** Whether a request for `model` (a version, or whichever is the default) may run twice. */
  allowsRerun(model: string, version: string | undefined): boolean {
    if (version !== undefined) return !this.#notIdempotent.has(modelKey({ name: model, version }));
    // No version asked for: any version could have served it, so one that is not idempotent decides.
    for (const key of this.#notIdempotent) if (parseModelKey(key).name === model) return false;
    return true;
  }
}
