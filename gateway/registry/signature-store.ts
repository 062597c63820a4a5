import { isModelName, isModelVersion } from "../../shared/model-names.ts";
import { type ModelSignature, ModelSignatureSchema } from "../../shared/protocol/model-signatures.ts";

/**
 * Model signatures (inputs and outputs) that agents reported, kept in the registry's storage: they do not
 * change within a version, outlive any one agent's connection, and must survive hibernation. Written only
 * when new or different, so agents that repeat them cost nothing.
 */
const prefixOf = (name: string) => `signature:${name}:`;

export class SignatureStore {
  readonly #kv: SyncKvStorage;
  readonly #known = new Map<string, string>();

  constructor(kv: SyncKvStorage) {
    this.#kv = kv;
  }

  save(signatures: readonly ModelSignature[]): void {
    for (const signature of signatures) {
      // Names become storage keys and metadata answers: only what a client could ask for is kept.
      if (!isModelName(signature.name) || !isModelVersion(signature.version)) continue;
      const key = `${prefixOf(signature.name)}${signature.version}`;
      const json = JSON.stringify(signature);
      if (this.#known.get(key) === json) continue;
      const stored = this.#kv.get(key);
      if (JSON.stringify(stored) !== json) this.#kv.put(key, signature);
      this.#known.set(key, json);
    }
  }

  /** The signature of one version, if an agent reported it. */
  find(name: string, version: string): ModelSignature | undefined {
    const parsed = ModelSignatureSchema.safeParse(this.#kv.get(`${prefixOf(name)}${version}`));
    return parsed.success ? parsed.data : undefined;
  }

  /** Every version of `name` whose signature is known. */
  of(name: string): ModelSignature[] {
    const found: ModelSignature[] = [];
    for (const [, value] of this.#kv.list({ prefix: prefixOf(name) })) {
      const parsed = ModelSignatureSchema.safeParse(value);
      if (parsed.success) found.push(parsed.data);
    }
    return found;
  }
}
