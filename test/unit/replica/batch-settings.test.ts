import { describe, expect, test } from "vitest";
import { batchSettingsFor } from "../../../backend/replica/batch-settings.ts";
import type { TensorSpec } from "../../../backend/replica/ort-tensors.ts";
import { defaultModelConfig, parseModelConfig } from "../../../shared/model-config.ts";

const spec = (name: string, shape: number[]): TensorSpec => ({ name, datatype: "FP32", shape });
const image = { inputs: [spec("x", [-1, 3, -1, -1])], outputs: [spec("y", [-1, 1, -1, -1])] };
const defaults = { maxBatchSize: 16, maxQueueDelayMicroseconds: 500 };
const config = (json: object) => parseModelConfig(JSON.stringify(json), "config.json");

describe("batchSettingsFor", () => {
  test("a model whose inputs and outputs all start with a dynamic dimension batches with the defaults", () => {
    expect(batchSettingsFor(defaultModelConfig(), image, defaults)).toEqual({
      maxBatchSize: 16,
      maxQueueDelayMs: 0.5,
      preferredBatchSizes: [],
    });
  });

  test("config.json's Triton keys win over the defaults", () => {
    const settings = batchSettingsFor(
      config({
        max_batch_size: 8,
        dynamic_batching: { max_queue_delay_microseconds: 2000, preferred_batch_size: [8, 4, 4, 64] },
      }),
      image,
      defaults,
    );
    expect(settings).toEqual({ maxBatchSize: 8, maxQueueDelayMs: 2, preferredBatchSizes: [4, 8] });
  });

  test("batching is off where the model says so, where the defaults say so, or where rows cannot be told apart", () => {
    expect(batchSettingsFor(config({ max_batch_size: 0 }), image, defaults)).toBeUndefined();
    expect(batchSettingsFor(config({ max_batch_size: 1 }), image, defaults)).toBeUndefined();
    expect(batchSettingsFor(defaultModelConfig(), image, { ...defaults, maxBatchSize: 1 })).toBeUndefined();
    const fixedBatch = { inputs: [spec("x", [1, 3, 64, 64])], outputs: image.outputs };
    expect(batchSettingsFor(defaultModelConfig(), fixedBatch, defaults)).toBeUndefined();
    const reducedOutput = { inputs: image.inputs, outputs: [spec("score", [1])] };
    expect(batchSettingsFor(defaultModelConfig(), reducedOutput, defaults)).toBeUndefined();
  });

  test("a lone dynamic dimension (a token sequence, say) is stacked only when config.json asks for it", () => {
    const tokens = { inputs: [spec("ids", [-1])], outputs: [spec("logits", [-1])] };
    expect(batchSettingsFor(defaultModelConfig(), tokens, defaults)).toBeUndefined();
    expect(batchSettingsFor(config({ max_batch_size: 4 }), tokens, defaults)?.maxBatchSize).toBe(4);
  });
});
