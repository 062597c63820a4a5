/**
 * Model names as metric labels, bounded: names come from whoever sends requests, so past MAX_MODEL_LABELS
 * distinct ones every new name is counted as "_other" (no valid model name starts with "_"), and a client
 * asking for random names cannot make Prometheus store a series per name. The gateway keeps the same bound.
 */
export const MAX_MODEL_LABELS = 200;
export const OTHER_MODELS = "_other";

export class ModelLabels {
  readonly #seen = new Set<string>();

  label(model: string): string {
    if (this.#seen.has(model)) return model;
    if (this.#seen.size >= MAX_MODEL_LABELS) return OTHER_MODELS;
    this.#seen.add(model);
    return model;
  }
}
