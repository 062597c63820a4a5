import { join } from "node:path";
import { encodeMlp, mlpForBytes } from "../../test/fixtures/onnx-builder.ts";
import { modelPath, writeFileIfChanged } from "../../test/fixtures/repository.ts";
import { REPO_ROOT } from "../../test/integration/harness/wrangler-dev.ts";
import type { ModelSpec } from "../sim/scenario.ts";

/**
 * The live benchmark's model repository: the simulator's catalogue names (model-01 ... model-40), each an
 * MLP of one architecture with its own weights, sized so that a load takes a few hundred milliseconds on
 * the CPU (bench/results/cpu-models.md: 100 MB loads in ~0.34 s on the 2-core machine). Written once into a
 * gitignored folder and rewritten only when a model's bytes would change.
 */
export const LIVE_REPOSITORY = join(REPO_ROOT, "bench", "live", ".models");

/** The MLPs take 16 features, like the test repository's. */
export const FEATURES = 16;

export function writeCatalogue(models: readonly ModelSpec[], megabytes: number): string {
  models.forEach((model, index) => {
    const spec = mlpForBytes({ targetBytes: megabytes * 1e6, seed: 1_000 + index, name: model.name });
    writeFileIfChanged(modelPath(LIVE_REPOSITORY, model.name), encodeMlp(spec));
  });
  return LIVE_REPOSITORY;
}
