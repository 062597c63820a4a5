import { mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test, vi } from "vitest";
import { openRepository } from "../../../backend/models/open-repository.ts";
import { bucketWarmupFeeds, declaredWarmup, readWarmupFiles } from "../../../backend/replica/model-warmup.ts";
import { WorkerSession } from "../../../backend/replica/worker-session.ts";
import { SwitchyardError } from "../../../shared/errors.ts";
import { defaultModelConfig, parseModelConfig, referencedFiles } from "../../../shared/model-config.ts";
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

describe("what a warm-up input holds (Triton's zero_data, random_data, input_data_file)", () => {
  const vector = [{ name: "v", datatype: "FP32" as const, shape: [-1, 4] }];
  const rowFile = (values: number[]) => new Uint8Array(Float32Array.from(values).buffer);

  test("random_data: floats in [0, 1) drawn anew for each run, integers 0 or 1", () => {
    const [run] = declaredWarmup(
      [...vector, { name: "ids", datatype: "INT64" as const, shape: [-1, 64] }],
      configWith([
        {
          batch_size: 8,
          inputs: { v: { dims: [4], random_data: true }, ids: { dims: [64], random_data: true } },
        },
      ]),
    );
    const [first, second] = [run?.feeds(), run?.feeds()];
    const floats = Array.from(first?.[0]?.data as Float32Array);
    expect(floats).toHaveLength(32);
    expect(floats.every((value) => value >= 0 && value < 1)).toBe(true);
    expect(new Set(floats).size).toBeGreaterThan(1);
    expect(Array.from(second?.[0]?.data as Float32Array)).not.toEqual(floats);
    const ids = Array.from(first?.[1]?.data as BigInt64Array);
    expect(ids.every((id) => id === 0n || id === 1n)).toBe(true);
    expect(new Set(ids).size).toBe(2);
  });

  test("input_data_file: one row, repeated for each row of the sample's batch (and of a bucket), read from its start", () => {
    const files = new Map([["row.bin", rowFile([1, 2, 3, 4, 99])]]);
    const config = configWith([
      { name: "r", batch_size: 3, inputs: { v: { dims: [4], input_data_file: "row.bin" } } },
    ]);
    const [run] = declaredWarmup(vector, config, files);
    const [feed] = run?.feeds() ?? [];
    expect(feed?.shape).toEqual([3, 4]);
    expect(Array.from(feed?.data as Float32Array)).toEqual([1, 2, 3, 4, 1, 2, 3, 4, 1, 2, 3, 4]);
    expect(run?.feeds()[0]?.data).not.toBe(feed?.data);
    expect(Array.from(bucketWarmupFeeds(vector, config, 2, files)?.[0]?.data as Float32Array)).toEqual([
      1, 2, 3, 4, 1, 2, 3, 4,
    ]);
    // BYTES: each element after its 4-byte length.
    const text = [{ name: "t", datatype: "BYTES" as const, shape: [-1, 2] }];
    const strings = new Uint8Array([2, 0, 0, 0, 104, 105, 0, 0, 0, 0]);
    const [words] = declaredWarmup(
      text,
      configWith([{ batch_size: 2, inputs: { t: { dims: [2], input_data_file: "t.bin" } } }]),
      new Map([["t.bin", strings]]),
    );
    expect(words?.feeds()[0]?.data).toEqual([
      new Uint8Array([104, 105]),
      new Uint8Array(0),
      new Uint8Array([104, 105]),
      new Uint8Array(0),
    ]);
  });

  test("input_data_file where a sample's dims are the input's whole shape: the file holds the whole tensor", () => {
    const files = new Map([["all.bin", rowFile([1, 2, 3, 4, 5, 6, 7, 8])]]);
    const config = configWith([{ inputs: { v: { dims: [2, 4], input_data_file: "all.bin" } } }]);
    const [run] = declaredWarmup(vector, config, files);
    expect(run?.feeds()[0]?.shape).toEqual([2, 4]);
    expect(Array.from(run?.feeds()[0]?.data as Float32Array)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    // A bucket's rows are batch rows: each takes the file's first.
    expect(Array.from(bucketWarmupFeeds(vector, config, 2, files)?.[0]?.data as Float32Array)).toEqual([
      1, 2, 3, 4, 1, 2, 3, 4,
    ]);
  });

  test("a data file too short for a row fails, naming the sample, the input and the file", () => {
    const config = configWith([{ name: "short", inputs: { v: { dims: [4], input_data_file: "row.bin" } } }]);
    expect(() => declaredWarmup(vector, config, new Map([["row.bin", rowFile([1, 2, 3])]]))).toThrow(
      "model_warmup sample 'short': input 'v': input_data_file 'row.bin' holds 12 bytes, and one row of 4 FP32 elements takes 16",
    );
    // BYTES elements cannot be read "from the start" of a longer file: it must hold them exactly.
    const text = [{ name: "t", datatype: "BYTES" as const, shape: [-1, 1] }];
    const strings = configWith([{ name: "words", inputs: { t: { dims: [1], input_data_file: "t.bin" } } }]);
    expect(() =>
      declaredWarmup(text, strings, new Map([["t.bin", new Uint8Array([1, 0, 0, 0, 104, 9])]])),
    ).toThrow(
      "model_warmup sample 'words': input 't': input_data_file 't.bin': 1 bytes are left over after 1 element",
    );
  });

  test("a sample gives an input at most one of the three", () => {
    expect(() => configWith([{ inputs: { v: { dims: [4], zero_data: true, random_data: true } } }])).toThrow(
      /at most one of zero_data, random_data and input_data_file/,
    );
  });

  test("data files are read from the model's warmup/ directory, and only from there", async () => {
    const dir = mkdtempSync(join(tmpdir(), "switchyard-warmup-files-"));
    writeFileSync(join(dir, "row.bin"), rowFile([5, 6, 7, 8]));
    const named = (file: string) =>
      configWith([{ name: "s", inputs: { v: { dims: [4], input_data_file: file } } }]);
    expect(await readWarmupFiles(named("row.bin"), { warmupDir: dir, labelsDir: dir })).toEqual(
      new Map([["row.bin", rowFile([5, 6, 7, 8])]]),
    );
    // A name that only starts with two dots is a file in warmup/ like any other.
    writeFileSync(join(dir, "..row.bin"), rowFile([1]));
    expect(
      (await readWarmupFiles(named("..row.bin"), { warmupDir: dir, labelsDir: dir })).get("..row.bin"),
    ).toEqual(rowFile([1]));
    await expect(readWarmupFiles(named("gone.bin"), { warmupDir: dir, labelsDir: dir })).rejects.toThrow(
      "model_warmup sample 's': input 'v': input_data_file 'gone.bin' is not in the model's warmup/ directory",
    );
  });

  test("config.json refuses a data file named outside warmup/", () => {
    const named = (file: string) =>
      configWith([{ name: "s", inputs: { v: { dims: [4], input_data_file: file } } }]);
    for (const file of ["../config.json", "a/../../x", "/etc/passwd", "a//b", "./row.bin", "a\\b", ""]) {
      expect(() => named(file), file).toThrow(
        /input_data_file: must be a path inside the model's warmup\/ directory/,
      );
    }
    expect(referencedFiles(named("pages/one.bin"))).toEqual([{ kind: "warmup", name: "pages/one.bin" }]);
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

  test("a sample's input_data_file is what the model runs at load; a missing one fails the load", async () => {
    const row = seededFloats(7, 16, 1);
    const warmup = [
      { name: "data", batch_size: 2, inputs: { x: { dims: [16], input_data_file: "row.bin" } } },
    ];
    const repository = temporaryRepository("warmup-data", [
      copyOf(MULTIPLEX_MODELS[0] ?? "", "mlp", { model_warmup: warmup }),
      copyOf(MULTIPLEX_MODELS[0] ?? "", "lost", { model_warmup: warmup }),
    ]);
    mkdirSync(join(repository, "mlp", "warmup"));
    writeFileSync(join(repository, "mlp", "warmup", "row.bin"), new Uint8Array(row.buffer));
    const replica = replicaOver(repository);
    // What each run was given, read before the run moves its buffers to the session's thread.
    const given: { shape: number[]; data: number[] }[] = [];
    const run = WorkerSession.prototype.run;
    const runs = vi.spyOn(WorkerSession.prototype, "run").mockImplementation(function (
      this: WorkerSession,
      ...args
    ) {
      const [feeds] = args;
      given.push({ shape: [...(feeds[0]?.shape ?? [])], data: Array.from(feeds[0]?.data as Float32Array) });
      return run.apply(this, args);
    });
    try {
      await replica.load("mlp");
      expect(given).toEqual([{ shape: [2, 16], data: [...row, ...row] }]);
    } finally {
      runs.mockRestore();
    }
    const failed = await replica.load("lost").then(
      () => undefined,
      (error: unknown) => error,
    );
    expect((failed as SwitchyardError).code).toBe("model_load_failed");
    expect((failed as SwitchyardError).message).toBe(
      `model "lost:1" failed to load: warming lost/1 up failed: model_warmup sample 'data': input 'x': input_data_file 'row.bin' is not in the model's warmup/ directory`,
    );
    expect(replica.state().loaded.map((held) => held.name)).toEqual(["mlp"]);
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
