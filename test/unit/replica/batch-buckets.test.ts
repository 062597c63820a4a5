import { mkdtempSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { describe, expect, test } from "vitest";
import { openRepository } from "../../../backend/models/open-repository.ts";
import { bucketFor, dropPadding } from "../../../backend/replica/batch-buckets.ts";
import { batchSettingsFor, bucketSizes } from "../../../backend/replica/batch-settings.ts";
import type { InferOutcome } from "../../../backend/replica/replica.ts";
import { sessionOptions } from "../../../backend/replica/session-options.ts";
import { stackInputs } from "../../../backend/replica/tensor-batch.ts";
import { defaultModelConfig } from "../../../shared/model-config.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";
import { seededFloats } from "../../fixtures/onnx-builder.ts";
import { DET_MODEL, MULTIPLEX_MODELS } from "../../fixtures/paths.ts";
import { copyOf, temporaryRepository } from "../../integration/harness/behaviour-models.ts";
import { useTestReplicas } from "./test-replicas.ts";

// Batch buckets: every run padded up to one of a few sizes, each size on a session of its own (on CUDA this
// is what keeps cuDNN from re-planning; here on the CPU the same code runs, switched on by --batch-buckets).

const rowsOf = (values: number[][]): Tensor => ({
  name: "x",
  datatype: "FP32",
  shape: [values.length, values[0]?.length ?? 0],
  data: Float32Array.from(values.flat()),
});

const numbers = (tensor: Tensor | undefined) => Array.from((tensor?.data ?? []) as Float32Array);

describe("bucket sizes and padding", () => {
  test("the sizes: preferred ones, else powers of two; always 1 and the max", () => {
    expect(bucketSizes(8, [2, 4, 8])).toEqual([1, 2, 4, 8]);
    expect(bucketSizes(32, [])).toEqual([1, 2, 4, 8, 16, 32]);
    expect(bucketSizes(6, [])).toEqual([1, 2, 4, 6]);
    expect(bucketSizes(8, [3, 16])).toEqual([1, 3, 8]);
    expect(bucketFor(3, [1, 2, 4, 8])).toBe(4);
    expect(bucketFor(8, [1, 2, 4, 8])).toBe(8);
    expect(bucketFor(9, [1, 2, 4, 8])).toBeUndefined();
  });

  test("on with CUDA by default for a model with convolutions (or whose operators are not known), on or off when told", () => {
    const specs = {
      inputs: [{ name: "x", datatype: "FP32" as const, shape: [-1, 3, -1, -1] }],
      outputs: [{ name: "y", datatype: "FP32" as const, shape: [-1, 1, -1, -1] }],
    };
    const config = { ...defaultModelConfig(), max_batch_size: 8 };
    const defaults = { maxBatchSize: 1, maxQueueDelayMicroseconds: 0 };
    const cuda = (opTypes?: string[]) => ({ device: "cuda" as const, opTypes: opTypes && new Set(opTypes) });
    const cpu = { device: "cpu" as const, opTypes: new Set(["Conv"]) };
    expect(batchSettingsFor(config, specs, defaults, cuda(["Conv", "Relu"]))?.buckets).toEqual([1, 2, 4, 8]);
    expect(batchSettingsFor(config, specs, defaults, cuda(["ConvTranspose"]))?.buckets).toEqual([1, 2, 4, 8]);
    expect(batchSettingsFor(config, specs, defaults, cuda())?.buckets).toEqual([1, 2, 4, 8]);
    // An MLP re-plans nothing when its batch size changes: no bucket, no session per size.
    expect(batchSettingsFor(config, specs, defaults, cuda(["Gemm", "Relu"]))?.buckets).toBeUndefined();
    expect(batchSettingsFor(config, specs, defaults, cpu)?.buckets).toBeUndefined();
    expect(batchSettingsFor(config, specs, { ...defaults, buckets: "on" }, cpu)?.buckets).toEqual([
      1, 2, 4, 8,
    ]);
    expect(batchSettingsFor(config, specs, { ...defaults, buckets: "on" }, cuda(["Gemm"]))?.buckets).toEqual([
      1, 2, 4, 8,
    ]);
    expect(
      batchSettingsFor(config, specs, { ...defaults, buckets: "off" }, cuda(["Conv"]))?.buckets,
    ).toBeUndefined();
  });

  test("stacking pads with copies of the last row, in the same copy; the padding is dropped again", () => {
    const batch = stackInputs([[rowsOf([[1, 2]])], [rowsOf([[3, 4]])], [rowsOf([[5, 6]])]], 4);
    expect(batch[0]?.shape).toEqual([4, 2]);
    expect(numbers(batch[0])).toEqual([1, 2, 3, 4, 5, 6, 5, 6]);
    const lone = stackInputs([[rowsOf([[7, 8]])]], 2);
    expect(numbers(lone[0])).toEqual([7, 8, 7, 8]);
    const unpadded = rowsOf([[9, 9]]);
    expect(stackInputs([[unpadded]], 1)[0]).toBe(unpadded);

    const words: Tensor = {
      name: "w",
      datatype: "BYTES",
      shape: [1, 2],
      data: [Uint8Array.of(1), Uint8Array.of(2)],
    };
    const paddedWords = stackInputs([[words]], 2)[0];
    expect(paddedWords?.shape).toEqual([2, 2]);
    expect(((paddedWords?.data ?? []) as Uint8Array[]).map((element) => element[0])).toEqual([1, 2, 1, 2]);

    const [trimmed] = dropPadding(batch, 3, 4);
    expect(trimmed?.shape).toEqual([3, 2]);
    expect(numbers(trimmed)).toEqual([1, 2, 3, 4, 5, 6]);
  });
});

const replicaWith = useTestReplicas({
  maxModels: 4,
  maxConcurrency: 64,
  batching: { maxBatchSize: 1, maxQueueDelayMicroseconds: 0, buckets: "on" },
});

const replicaOf = (models: string, overrides: Parameters<typeof replicaWith>[0] = {}) =>
  replicaWith({
    repository: openRepository(models, { cacheDir: mkdtempSync(join(tmpdir(), "switchyard-cache-")) }),
    ...overrides,
  });

describe("a replica with batch buckets (real onnxruntime sessions)", () => {
  test("concurrent requests are padded to a bucket; each answer is bit for bit what onnxruntime gives it alone", async () => {
    const models = temporaryRepository("buckets", [
      copyOf(MULTIPLEX_MODELS[0] ?? "", "mlp", {
        max_batch_size: 4,
        dynamic_batching: { preferred_batch_size: [2, 4] },
      }),
    ]);
    const replica = replicaOf(models);
    const signature = await replica.load("mlp");
    const inputs = [11, 12, 13].map(
      (seed): Tensor => ({ name: "x", datatype: "FP32", shape: [1, 16], data: seededFloats(seed, 16) }),
    );
    const outcomes = await Promise.all(
      inputs.map((input) => replica.infer({ model: "mlp", inputs: [input] })),
    );
    // The three ran as one batch (padded to 4 on the bucket's own session).
    expect(outcomes.map((outcome) => outcome.batch)).toEqual(Array(3).fill({ requests: 3, rows: 3 }));
    const direct = await ort.InferenceSession.create(
      join(models, "mlp", "1", "model.onnx"),
      sessionOptions({ kind: "cpu" }, { intraOpThreads: 1 }),
    );
    for (const [index, input] of inputs.entries()) {
      const alone = await direct.run({ x: new ort.Tensor("float32", input.data as Float32Array, [1, 16]) });
      expect(outcomes[index]?.outputs[0]?.shape).toEqual([1, 8]);
      expect(outcomes[index]?.outputs[0]?.data).toEqual(alone.y?.data);
    }
    await direct.release();
    // Every bucket's session counts in the replica's memory: three sessions (1, 2, 4) of the model.
    const loaded = replica.state().loaded.find((model) => model.name === signature.name);
    expect(loaded?.bytes).toBe(3 * statSync(join(models, "mlp", "1", "model.onnx")).size);
  });

  test("PP-OCR detection: padded batches give the maps of single runs; model_warmup warms every bucket at load", async () => {
    const size = 64;
    const models = temporaryRepository("buckets", [
      copyOf(DET_MODEL, "det", {
        max_batch_size: 4,
        dynamic_batching: { preferred_batch_size: [2, 4] },
        model_warmup: [
          {
            name: "image",
            batch_size: 1,
            inputs: { x: { data_type: "TYPE_FP32", dims: [3, size, size], zero_data: true } },
          },
        ],
      }),
    ]);
    const replica = replicaOf(models);
    await replica.load("det");
    const images = [21, 22, 23].map(
      (seed): Tensor => ({
        name: "x",
        datatype: "FP32",
        shape: [1, 3, size, size],
        data: seededFloats(seed, 3 * size * size, 2),
      }),
    );
    const alone = replicaOf(models, { batching: { maxBatchSize: 1, buckets: "off" } });
    const expected: InferOutcome[] = [];
    for (const image of images) {
      const copy = { ...image, data: Float32Array.from(image.data as Float32Array) };
      expected.push(await alone.infer({ model: "det", inputs: [copy] }));
    }
    const outcomes = await Promise.all(
      images.map((image) => replica.infer({ model: "det", inputs: [image] })),
    );
    outcomes.forEach((outcome, index) => {
      expect(outcome.batch).toEqual({ requests: 3, rows: 3 });
      expect(outcome.outputs[0]?.shape).toEqual([1, 1, size, size]);
      expect(outcome.outputs[0]?.data).toEqual(expected[index]?.outputs[0]?.data);
    });
  });
});
