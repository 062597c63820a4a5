import { Prng } from "../prng.ts";
import { GiB, type ModelSpec, type Scenario } from "../scenario.ts";
import { s1 } from "./s1-zipf.ts";

const SEED = 4;

/** 40 models whose load times spread log-uniformly over 0.2-8 s, sizes in proportion (1 GiB a second). */
function mixedCatalogue(): ModelSpec[] {
  const rng = new Prng(SEED).fork("catalogue");
  return Array.from({ length: 40 }, (_, index) => {
    const loadMs = 200 * 40 ** rng.next();
    return {
      name: `model-${String(index + 1).padStart(2, "0")}`,
      bytes: Math.round((loadMs / 1000) * GiB),
      loadMs: { min: loadMs * 0.8, max: loadMs * 1.2 },
      inferMs: 50,
    };
  });
}

/** Models of mixed sizes under caches bounded by bytes (8 GiB a replica, about 4 average models). */
export const s4: Scenario = {
  ...s1,
  id: "S4",
  title: "Mixed sizes, byte-bounded caches",
  summary: "S1, but loads 0.2-8 s (log-uniform, size 1 GiB per second of load), 8 GiB per replica",
  maxModels: 64,
  maxBytes: 8 * GiB,
  models: mixedCatalogue(),
  seed: SEED,
};
