import { SwitchyardError } from "../../shared/errors.ts";
import { declaredBatching } from "../../shared/model-config.ts";
import { modelKey } from "../../shared/model-names.ts";
import { OnnxFormatError } from "../../shared/onnx/onnx-signature.ts";
import type { ModelSignature } from "../../shared/protocol/model-signatures.ts";

import { describeOnnxFile } from "./file-byte-source.ts";
import type { ModelRepository } from "./repository.ts";

/**
 * Describes the models of the agent's repository without loading them: inputs and outputs from each ONNX
 * graph's headers, batching from its config.json. A version never changes, so each is described once.
 * A model of a remote repository is downloaded (and verified) first, as a load would.
 */
export class ModelDescriber {
  readonly #repository: ModelRepository;
  readonly #known = new Map<string, ModelSignature>();
  /** The keys of #known in the order they were first learned: what knownFrom() counts. */
  readonly #order: string[] = [];

  constructor(repository: ModelRepository) {
    this.#repository = repository;
  }

  /** The signature of a version (the highest when none is given); 404 when the repository lacks it. */
  async describe(name: string, version?: string): Promise<ModelSignature> {
    if (version !== undefined) {
      const known = this.#known.get(modelKey({ name, version }));
      if (known !== undefined) return known;
    }
    const model = await this.#repository.resolve(name, version);
    const key = modelKey(model);
    const known = this.#known.get(key);
    if (known !== undefined) return known;
    let graph: Awaited<ReturnType<typeof describeOnnxFile>>;
    try {
      graph = await describeOnnxFile(model.path);
    } catch (error) {
      const reason = error instanceof OnnxFormatError ? error.message : String(error);
      throw new SwitchyardError(
        "model_load_failed",
        `model '${name}' version ${model.version} cannot be described: ${reason}`,
        {
          cause: error,
        },
      );
    }
    const signature: ModelSignature = {
      name: model.name,
      version: model.version,
      ...graph,
      batching: declaredBatching(model.config),
    };
    this.#learn(key, signature);
    return signature;
  }

  #learn(key: string, signature: ModelSignature): void {
    if (!this.#known.has(key)) this.#order.push(key);
    this.#known.set(key, signature);
  }

  /** A signature learned elsewhere (a loaded session says the same). */
  remember(signature: ModelSignature): void {
    this.#learn(modelKey(signature), signature);
  }

  isKnown(name: string, version: string): boolean {
    return this.#known.has(modelKey({ name, version }));
  }

  /**
   * The signatures learned after the first `count` (in the order they were learned): what a reader that
   * has the first `count` lacks, at a cost of what it lacks, not of every signature known.
   */
  knownFrom(count: number): ModelSignature[] {
    return this.#order.slice(count).flatMap((key) => this.#known.get(key) ?? []);
  }
}
