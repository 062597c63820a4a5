import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test, vi } from "vitest";
import { openRepository } from "../../../backend/models/open-repository.ts";
import { bucketWarmupFeeds, declaredWarmup } from "../../../backend/replica/model-warmup.ts";
import { WorkerSession } from "../../../backend/replica/worker-session.ts";
import { SwitchyardError } from "../../../shared/errors.ts";
import { defaultModelConfig, parseModelConfig } from "../../../shared/model-config.ts";
import { seededFloats } from "../../fixtures/onnx-builder.ts";
import { DET_MODEL, MULTIPLEX_MODELS } from "../../fixtures/paths.ts";
import { copyOf, temporaryRepository } from "../../integration/harness/behaviour-models.ts";
import { useTestReplicas } from "./test-replicas.ts";

// Triton's model_warmup: the samples a model runs at load, and the shapes batch buckets warm with.

const image = [{ name: "x", datatype: "FP32" as const, shape: [-1, 3, -1, -1] }];
const configWith = (warmup: object[]) =>
  parseModelConfig(JSON.stringify({ model_warmup: warmup }), "det/config.json");

describe("the inputs a warm-up runs on", () => {
  test("a bucket's: fixed dimensions, or those a sample gives (after the batch or whole); none when unknown", () => {
    expect(bucketWarmupFeeds(image, defaultModelConfig(), 4)).toBeUndefined();
    const afterBatch = configWith([{ name: "640", batch_size: 1, inputs: { x: { dims: [3, 64, 80] } } }]);
    const [feed] = bucketWarmupFeeds(image, afterBatch, 4) ?? [];
    expect(feed?.shape).toEqual([4, 3, 64, 80]);
    expect(feed?.data).toEqual(new Float32Array(4 * 3 * 64 * 80));
    // Dims of the input's whole rank (Triton's max_batch_size 0): the bucket's rows replace the first.
    const whole = configWith([{ inputs: { x: { dims: [1, 3, 32, 32] } } }]);
    expect(bucketWarmupFeeds(image, whole, 2)?.[0]?.shape).toEqual([2, 3, 32, 32]);
    const fixed = [{ name: "x", datatype: "INT64" as const, shape: [-1, 16] }];
    expect(bucketWarmupFeeds(fixed, defaultModelConfig(), 2)?.[0]?.data).toEqual(new BigInt64Array(32));
  });

  test("a model's declared samples: every input of each, its batch_size and count, fresh buffers each run", () => {
    expect(declaredWarmup(image, defaultModelConfig())).toEqual([]);
    const inputs = [...image, { name: "scale", datatype: "FP32" as const, shape: [1] }];
    const runs = declaredWarmup(
      inputs,
      configWith([
        { name: "pair", batch_size: 2, count: 3, inputs: { x: { dims: [3, 64, 80] } } },
        { inputs: { x: { dims: [1, 3, 32, 32] } }, count: 0 },
      ]),
    );
    expect(runs.map(({ sample, count }) => ({ sample, count }))).toEqual([
      { sample: "pair", count: 3 },
      { sample: "#2", count: 1 },
    ]);
    const [first, second] = runs.map((run) => run.feeds());
    // The input the samples leave out has a fixed shape in the graph.
    expect(first?.map((feed) => feed.shape)).toEqual([[2, 3, 64, 80], [1]]);
    expect(second?.map((feed) => feed.shape)).toEqual([[1, 3, 32, 32], [1]]);
    expect(runs[0]?.feeds()[0]?.data).not.toBe(first?.[0]?.data);
  });

  test("a sample whose dims a bucket cannot use is refused too; a bucket with no dims at all is left cold", () => {
    expect(() =>
      bucketWarmupFeeds(image, configWith([{ name: "flat", inputs: { x: { dims: [64] } } }]), 2),
    ).toThrow(
      "model_warmup sample 'flat': dims [64] for input 'x' fit neither its rank 4 nor the 3 dimensions after its batch",
    );
    expect(
      bucketWarmupFeeds(image, configWith([{ name: "other", inputs: { y: { dims: [3] } } }]), 2),
    ).toBeUndefined();
  });

  test("a sample that cannot say an input's shape is refused, naming the sample and the input", () => {
    expect(() => declaredWarmup(image, configWith([{ name: "empty", inputs: {} }]))).toThrow(
      "model_warmup sample 'empty': no dims for input 'x', whose shape [-1, 3, -1, -1] has dynamic dimensions",
    );
    expect(() => declaredWarmup(image, configWith([{ inputs: { x: { dims: [64, 80] } } }]))).toThrow(
      "model_warmup sample '#1': dims [64, 80] for input 'x' fit neither its rank 4 nor the 3 dimensions after its batch",
    );
  });
});

const replicaWith = useTestReplicas({ maxModels: 4 });

const replicaOver = (models: string) =>
  replicaWith({
    repository: openRepository(models, { cacheDir: mkdtempSync(join(tmpdir(), "switchyard-cache-")) }),
  });

describe("a replica warms a model up at load (real onnxruntime sessions)", () => {
  test("PP-OCR detection without batching, warmed at load at another size, answers as a session never warmed", async () => {
    const size = 64;
    // Warmed at 32x32 (twice), asked at 64x64: the session's plan follows the shapes it is given.
    const warmup = [{ name: "small", inputs: { x: { dims: [1, 3, 32, 32] } }, count: 2 }];
    const warmed = replicaOver(
      temporaryRepository("warmup", [copyOf(DET_MODEL, "det", { model_warmup: warmup })]),
    );
    const cold = replicaOver(temporaryRepository("warmup", [copyOf(DET_MODEL, "det")]));
    const runs = vi.spyOn(WorkerSession.prototype, "run");
    try {
      await warmed.load("det");
      // The sample, `count` times, at load; a model without one runs nothing.
      expect(runs.mock.calls.map(([feeds]) => feeds[0]?.shape)).toEqual([
        [1, 3, 32, 32],
        [1, 3, 32, 32],
      ]);
      await cold.load("det");
      expect(runs).toHaveBeenCalledTimes(2);
    } finally {
      runs.mockRestore();
    }
    const request = () => ({
      model: "det",
      inputs: [
        {
          name: "x",
          datatype: "FP32" as const,
          shape: [1, 3, size, size],
          data: seededFloats(31, 3 * size * size, 2),
        },
      ],
    });
    const [after, alone] = await Promise.all([warmed.infer(request()), cold.infer(request())]);
    expect(after.outputs[0]?.shape).toEqual([1, 1, size, size]);
    expect(after.outputs[0]?.data).toEqual(alone.outputs[0]?.data);
  });

  test("a sample onnxruntime refuses fails the load with onnxruntime's words and the sample's name", async () => {
    const replica = replicaOver(
      temporaryRepository("warmup", [
        copyOf(MULTIPLEX_MODELS[0] ?? "", "mlp", {
          model_warmup: [{ name: "wide", inputs: { x: { dims: [17] } } }],
        }),
      ]),
    );
    const failed = await replica.load("mlp").then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(failed).toBeInstanceOf(SwitchyardError);
    expect((failed as SwitchyardError).code).toBe("model_load_failed");
    expect((failed as SwitchyardError).message).toMatch(
      /warming mlp\/1 up failed: model_warmup sample 'wide': .*invalid dimensions.*Expected: 16/s,
    );
    // Nothing of it stays loaded.
    expect(replica.state().loaded).toEqual([]);
  });
});
