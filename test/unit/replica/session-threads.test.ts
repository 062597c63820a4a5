import { copyFileSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, test } from "vitest";
import { openRepository } from "../../../backend/models/open-repository.ts";
import { Replica } from "../../../backend/replica/replica.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";
import { encodeMlp, mlpForBytes, seededFloats } from "../../fixtures/onnx-builder.ts";
import { DET_MODEL, MULTIPLEX_MODELS, repoModelPath } from "../../fixtures/paths.ts";
import { PPOCR_DET_DIMS, ppocrDetSampleInput } from "../../fixtures/ppocr.ts";
import { writeFileIfChanged } from "../../fixtures/repository.ts";

// Each loaded model's session runs in a worker thread of its own: its load and its runs leave the main
// thread free, and other models' loads and runs go on meanwhile. Real onnxruntime, real workers.

const LARGE = "large";
const SMALL = "small";
let repoDir: string;

beforeAll(() => {
  repoDir = mkdtempSync(join(tmpdir(), "switchyard-threads-repo-"));
  // ~150 MB of weights: a load of a few hundred milliseconds, which used to freeze the whole process.
  const spec = mlpForBytes({ targetBytes: 150 * 2 ** 20, seed: 42, name: LARGE });
  writeFileIfChanged(join(repoDir, LARGE, "1", "model.onnx"), encodeMlp(spec));
  for (const [name, from] of [
    [SMALL, MULTIPLEX_MODELS[0] ?? ""],
    [DET_MODEL, DET_MODEL],
  ] as const) {
    mkdirSync(join(repoDir, name, "1"), { recursive: true });
    copyFileSync(repoModelPath(from), join(repoDir, name, "1", "model.onnx"));
  }
}, 60_000);
afterAll(() => {
  rmSync(repoDir, { recursive: true, force: true });
});

const replicas: Replica[] = [];
afterEach(async () => {
  await Promise.all(replicas.splice(0).map((replica) => replica.close()));
});

function replica(): Replica {
  const created = new Replica({
    id: "0",
    device: { kind: "cpu" },
    repository: openRepository(repoDir, { cacheDir: mkdtempSync(join(tmpdir(), "switchyard-cache-")) }),
    maxModels: 4,
    maxModelBytes: 2 ** 31,
    keepAliveMs: 0,
    maxConcurrency: 8,
    intraOpThreads: 1,
  });
  replicas.push(created);
  return created;
}

/** Ticks a timer every few milliseconds; the longest gap between ticks is how long the loop was stuck. */
function watchEventLoop(intervalMs = 5): { stop(): number } {
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(longest, performance.now() - last);
    },
  };
}

const smallInput = (): Tensor => ({ name: "x", datatype: "FP32", shape: [1, 16], data: seededFloats(3, 16) });

describe("sessions in worker threads", () => {
  test("the event loop keeps ticking while a large model loads", async () => {
    const agent = replica();
    const watch = watchEventLoop();
    const started = performance.now();
    await agent.load(LARGE);
    const loadMs = performance.now() - started;
    const longestGapMs = watch.stop();
    // In the main thread, onnxruntime's synchronous load made one gap as long as the load itself.
    expect(longestGapMs).toBeLessThan(loadMs / 2);
  });

  test("loads of two models overlap: a small model is ready while a large one still loads", async () => {
    const agent = replica();
    const ready: string[] = [];
    const large = agent.load(LARGE).then(() => ready.push(LARGE));
    // Asked for once the large load is under way (on the main thread, that load would now hold it).
    await new Promise((resolve) => setTimeout(resolve, 50));
    const small = agent.load(SMALL).then(() => ready.push(SMALL));
    await Promise.all([large, small]);
    expect(ready).toEqual([SMALL, LARGE]);
  });

  test("a long run of one model does not hold up another model's requests", async () => {
    const agent = replica();
    await Promise.all([agent.load(DET_MODEL), agent.load(SMALL)]);
    const done: string[] = [];
    const detInput: Tensor = {
      name: "x",
      datatype: "FP32",
      shape: [...PPOCR_DET_DIMS],
      data: ppocrDetSampleInput(),
    };
    const det = agent.infer({ model: DET_MODEL, inputs: [detInput] }).then(() => done.push(DET_MODEL));
    const small = agent.infer({ model: SMALL, inputs: [smallInput()] }).then(() => done.push(SMALL));
    await Promise.all([det, small]);
    expect(done).toEqual([SMALL, DET_MODEL]);
  });
});
