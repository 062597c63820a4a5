import { copyFileSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, test } from "vitest";
import { openRepository } from "../../../backend/models/open-repository.ts";
import type { InferOutcome, Replica } from "../../../backend/replica/replica.ts";
import { SwitchyardError } from "../../../shared/errors.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";
import { MULTI_WIDTH, mlpWeights, referenceMlp, seededFloats } from "../../fixtures/onnx-builder.ts";
import {
  DET_MODEL,
  IDENTITY_MODELS,
  MULTI_MODEL,
  MULTIPLEX_MODELS,
  MULTIPLEX_SPECS,
  repoModelPath,
} from "../../fixtures/paths.ts";
import {
  buildLookupModel,
  GATHER_TABLE,
  lookupRequest,
  temporaryRepository,
} from "../../integration/harness/behaviour-models.ts";
import { expectAllClose } from "../../support/close-to.ts";
import { useTestReplicas } from "./test-replicas.ts";

// Dynamic batching on real onnxruntime sessions (CPU): what a user sees is the same answers as without
// batching, each request getting its own rows, and fewer runs.

const replicaWith = useTestReplicas({
  maxModels: 4,
  maxConcurrency: 64,
  batching: { maxBatchSize: 32, maxQueueDelayMicroseconds: 0 },
});

/** A repository of copies of generated models, each with the config.json given. */
function repositoryWithConfigs(models: Record<string, { from: string; config: object }>): string {
  const dir = mkdtempSync(join(tmpdir(), "switchyard-batching-repo-"));
  for (const [name, { from, config }] of Object.entries(models)) {
    mkdirSync(join(dir, name, "1"), { recursive: true });
    copyFileSync(repoModelPath(from), join(dir, name, "1", "model.onnx"));
    writeFileSync(join(dir, name, "config.json"), JSON.stringify(config));
  }
  return dir;
}

const mlp = (index: number) => MULTIPLEX_MODELS[index] ?? "";
const mlpInput = (rows: number, seed: number): Tensor => ({
  name: "x",
  datatype: "FP32",
  shape: [rows, 16],
  data: seededFloats(seed, rows * 16),
});
function expectedMlp(index: number, input: Tensor): Float32Array {
  const spec = MULTIPLEX_SPECS[index];
  if (spec === undefined) throw new Error("fixture spec missing");
  return referenceMlp(mlpWeights(spec), input.data as Float32Array, input.shape[0] ?? 0);
}
const batchOf = (outcome: InferOutcome) => outcome.batch;
const runsOf = (replica: Replica, model: string) => replica.state().timings[`${model}:1`]?.runs ?? 0;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe("dynamic batching", () => {
  test("concurrent requests run as one batch, and each gets exactly its own rows", async () => {
    const replica = replicaWith();
    await replica.load(mlp(0));
    const inputs = [1, 2, 3, 1, 2, 1].map((rows, seed) => mlpInput(rows, seed));
    const outcomes = await Promise.all(
      inputs.map((input) => replica.infer({ model: mlp(0), inputs: [input] })),
    );
    outcomes.forEach((outcome, index) => {
      const input = inputs[index] as Tensor;
      expect(outcome.outputs[0]?.shape).toEqual([input.shape[0], 8]);
      expectAllClose(outcome.outputs[0]?.data as Float32Array, expectedMlp(0, input));
      expect(batchOf(outcome)).toEqual({ requests: 6, rows: 10 });
    });
    // One session run served all six; every request reports that run's time.
    expect(runsOf(replica, mlp(0))).toBe(1);
    expect(new Set(outcomes.map((outcome) => outcome.timings.inferMs)).size).toBe(1);
  });

  test("PP-OCR detection gives the same maps batched as one by one", async () => {
    const size = 64;
    const images = [11, 12, 13].map(
      (seed): Tensor => ({
        name: "x",
        datatype: "FP32",
        shape: [1, 3, size, size],
        data: seededFloats(seed, 3 * size * size, 2),
      }),
    );
    const alone = replicaWith({ batching: { maxBatchSize: 1 } });
    const expected: InferOutcome[] = [];
    for (const image of images) expected.push(await alone.infer({ model: DET_MODEL, inputs: [image] }));
    expect(expected.map((outcome) => batchOf(outcome)?.requests)).toEqual([1, 1, 1]);

    const batched = replicaWith();
    await batched.load(DET_MODEL);
    const outcomes = await Promise.all(
      images.map((image) => batched.infer({ model: DET_MODEL, inputs: [image] })),
    );
    outcomes.forEach((outcome, index) => {
      expect(batchOf(outcome)).toEqual({ requests: 3, rows: 3 });
      expect(outcome.outputs[0]?.shape).toEqual([1, 1, size, size]);
      expectAllClose(
        outcome.outputs[0]?.data as Float32Array,
        expected[index]?.outputs[0]?.data as Float32Array,
        1e-5,
      );
    });
  });

  test("a model with two inputs and two outputs of different types splits both outputs per request", async () => {
    const replica = replicaWith();
    await replica.load(MULTI_MODEL);
    const requestOf = (rows: number, base: number): Tensor[] => [
      {
        name: "a",
        datatype: "FP32",
        shape: [rows, MULTI_WIDTH],
        data: Float32Array.from({ length: rows * MULTI_WIDTH }, (_, index) => base + index / 4),
      },
      {
        name: "b",
        datatype: "INT64",
        shape: [rows, MULTI_WIDTH],
        data: BigInt64Array.from({ length: rows * MULTI_WIDTH }, (_, index) => BigInt(base * 10 + index)),
      },
    ];
    const requests = [requestOf(1, 1), requestOf(2, 2), requestOf(3, 3)];
    const outcomes = await Promise.all(
      requests.map((inputs) => replica.infer({ model: MULTI_MODEL, inputs })),
    );
    outcomes.forEach((outcome, index) => {
      const [a, b] = requests[index] as [Tensor, Tensor];
      const rows = a.shape[0] ?? 0;
      expect(batchOf(outcome)).toEqual({ requests: 3, rows: 6 });
      const sum = outcome.outputs.find((output) => output.name === "sum");
      const total = outcome.outputs.find((output) => output.name === "total");
      const bValues = b.data as BigInt64Array;
      const aValues = a.data as Float32Array;
      expect(sum?.shape).toEqual([rows, MULTI_WIDTH]);
      expectAllClose(
        sum?.data as Float32Array,
        Float32Array.from(aValues, (value, at) => value + Number(bValues[at])),
      );
      expect(total?.shape).toEqual([rows, 1]);
      const rowSums = Array.from({ length: rows }, (_, row) =>
        bValues.slice(row * MULTI_WIDTH, (row + 1) * MULTI_WIDTH).reduce((s, v) => s + v, 0n),
      );
      expect(Array.from(total?.data as BigInt64Array)).toEqual(rowSums);
    });
  });

  test("a batch never mixes models: each model's requests run on its own weights", async () => {
    const replica = replicaWith();
    await replica.load(mlp(0));
    await replica.load(mlp(1));
    const calls = [0, 1, 0, 1, 0, 1].map((index, seed) => ({ index, input: mlpInput(1, 100 + seed) }));
    const outcomes = await Promise.all(
      calls.map(({ index, input }) => replica.infer({ model: mlp(index), inputs: [input] })),
    );
    outcomes.forEach((outcome, at) => {
      const call = calls[at] as (typeof calls)[number];
      expect(outcome.model.name).toBe(mlp(call.index));
      expect(batchOf(outcome)).toEqual({ requests: 3, rows: 3 });
      expectAllClose(outcome.outputs[0]?.data as Float32Array, expectedMlp(call.index, call.input));
    });
  });

  test("requests whose other dimensions differ are batched apart; BYTES and FP16 stack like numbers", async () => {
    const replica = replicaWith();
    const fp32 = IDENTITY_MODELS.FP32;
    await replica.load(fp32);
    const shapes = [
      [1, 3],
      [1, 5],
      [1, 3],
      [2, 5],
    ];
    const inputs = shapes.map(
      (shape, seed): Tensor => ({
        name: "x",
        datatype: "FP32",
        shape,
        data: seededFloats(seed, (shape[0] ?? 0) * (shape[1] ?? 0)),
      }),
    );
    const outcomes = await Promise.all(
      inputs.map((input) => replica.infer({ model: fp32, inputs: [input] })),
    );
    expect(outcomes.map(batchOf)).toEqual([
      { requests: 2, rows: 2 },
      { requests: 2, rows: 3 },
      { requests: 2, rows: 2 },
      { requests: 2, rows: 3 },
    ]);
    outcomes.forEach((outcome, index) => {
      expect(outcome.outputs[0]?.shape).toEqual(inputs[index]?.shape);
      expect(outcome.outputs[0]?.data).toEqual(inputs[index]?.data);
    });

    const text = (words: string[]): Tensor => ({
      name: "x",
      datatype: "BYTES",
      shape: [1, words.length],
      data: words.map((word) => new TextEncoder().encode(word)),
    });
    const strings = [text(["élan", "vital"]), text(["ça", "va"])];
    const halves: Tensor[] = [0x3c00, 0x4000].map((bits) => ({
      name: "x",
      datatype: "FP16",
      shape: [1, 2],
      data: Uint16Array.of(bits, bits + 1),
    }));
    await replica.load(IDENTITY_MODELS.BYTES);
    await replica.load(IDENTITY_MODELS.FP16);
    const [textOut, halfOut] = await Promise.all([
      Promise.all(strings.map((input) => replica.infer({ model: IDENTITY_MODELS.BYTES, inputs: [input] }))),
      Promise.all(halves.map((input) => replica.infer({ model: IDENTITY_MODELS.FP16, inputs: [input] }))),
    ]);
    textOut.forEach((outcome, index) => {
      expect(batchOf(outcome)?.requests).toBe(2);
      expect(outcome.outputs[0]?.data).toEqual(strings[index]?.data);
    });
    halfOut.forEach((outcome, index) => {
      expect(batchOf(outcome)?.requests).toBe(2);
      expect(Array.from(outcome.outputs[0]?.data as Uint16Array)).toEqual(
        Array.from(halves[index]?.data as Uint16Array),
      );
    });
  });

  test("no batch exceeds the max batch size; a request larger than it runs alone", async () => {
    const replica = replicaWith({ batching: { maxBatchSize: 4 } });
    await replica.load(mlp(0));
    const rows = [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 3, 2, 6];
    const inputs = rows.map((count, seed) => mlpInput(count, 200 + seed));
    const outcomes = await Promise.all(
      inputs.map((input) => replica.infer({ model: mlp(0), inputs: [input] })),
    );
    for (const outcome of outcomes.slice(0, -1)) expect(batchOf(outcome)?.rows).toBeLessThanOrEqual(4);
    expect(batchOf(outcomes.at(-1) as InferOutcome)).toEqual({ requests: 1, rows: 6 });
    outcomes.forEach((outcome, index) => {
      expectAllClose(outcome.outputs[0]?.data as Float32Array, expectedMlp(0, inputs[index] as Tensor));
    });
    // 19 rows of batchable requests in batches of at most 4, plus the large one alone.
    expect(runsOf(replica, mlp(0))).toBeGreaterThanOrEqual(6);
  });

  test("a request waits at most the max queue delay, and those arriving within it join its batch", async () => {
    const delayMs = 150;
    const replica = replicaWith({ batching: { maxBatchSize: 8, maxQueueDelayMicroseconds: delayMs * 1000 } });
    await replica.load(mlp(0));

    const started = performance.now();
    const first = replica.infer({ model: mlp(0), inputs: [mlpInput(1, 1)] });
    await sleep(40);
    const second = replica.infer({ model: mlp(0), inputs: [mlpInput(1, 2)] });
    const [a, b] = await Promise.all([first, second]);
    const elapsed = performance.now() - started;
    expect(batchOf(a)).toEqual({ requests: 2, rows: 2 });
    expect(batchOf(b)).toEqual({ requests: 2, rows: 2 });
    expect(a.timings.queueMs).toBeGreaterThanOrEqual(delayMs - 5);
    expect(elapsed).toBeGreaterThanOrEqual(delayMs - 5);
    expect(elapsed).toBeLessThan(delayMs + 250);

    const lone = await replica.infer({ model: mlp(0), inputs: [mlpInput(1, 3)] });
    expect(batchOf(lone)).toEqual({ requests: 1, rows: 1 });
    expect(lone.timings.queueMs).toBeGreaterThanOrEqual(delayMs - 5);
    expect(lone.timings.queueMs).toBeLessThan(delayMs + 250);
  });

  test("a request with a wrong shape fails alone; the others of its batch succeed", async () => {
    const replica = replicaWith();
    await replica.load(mlp(0));
    const good = [1, 2, 3].map((seed) => mlpInput(1, 300 + seed));
    const bad: Tensor = { name: "x", datatype: "FP32", shape: [1, 15], data: new Float32Array(15) };
    const settled = await Promise.allSettled([
      replica.infer({ model: mlp(0), inputs: [good[0] as Tensor] }),
      replica.infer({ model: mlp(0), inputs: [bad] }),
      replica.infer({ model: mlp(0), inputs: [good[1] as Tensor] }),
      replica.infer({ model: mlp(0), inputs: [good[2] as Tensor] }),
    ]);
    const [first, failed, ...rest] = settled;
    expect(failed?.status).toBe("rejected");
    const reason = (failed as PromiseRejectedResult).reason as SwitchyardError;
    expect(reason).toBeInstanceOf(SwitchyardError);
    expect(reason.status).toBe(400);
    [first, ...rest].forEach((result, index) => {
      expect(result?.status).toBe("fulfilled");
      const outcome = (result as PromiseFulfilledResult<InferOutcome>).value;
      expect(batchOf(outcome)).toEqual({ requests: 3, rows: 3 });
      expectAllClose(outcome.outputs[0]?.data as Float32Array, expectedMlp(0, good[index] as Tensor));
    });
  });

  test("a batch that fails at run time runs each request again alone, from inputs that were handed over", async () => {
    const dir = temporaryRepository("lookup", [
      { name: "lookup", bytes: buildLookupModel(), config: { max_batch_size: 8 } },
    ]);
    const replica = replicaWith({ repository: openRepository(dir, { cacheDir: join(dir, ".cache") }) });
    await replica.load("lookup");
    // The inputs move to the session's thread with the batch (as an HTTP body's do); when the batch fails
    // they must come back, or the requests run again alone on emptied arrays.
    const indexOf = (index: number) => lookupRequest(index).inputs[0] as Tensor;

    const indices = [2, 0, 7, 3, 1];
    const settled = await Promise.allSettled(
      indices.map((index) =>
        replica.infer({ model: "lookup", inputs: [indexOf(index)], handOverInputs: true }),
      ),
    );
    indices.forEach((index, position) => {
      const result = settled[position];
      if (index >= GATHER_TABLE.length) {
        expect(result?.status).toBe("rejected");
        const reason = (result as PromiseRejectedResult).reason as SwitchyardError;
        expect(reason.status).toBe(400);
        expect(reason.message).toMatch(/lookup/);
        return;
      }
      expect(result?.status).toBe("fulfilled");
      const outcome = (result as PromiseFulfilledResult<InferOutcome>).value;
      expect(Array.from(outcome.outputs[0]?.data as Float32Array)).toEqual([GATHER_TABLE[index]]);
    });
    // At least one batch held the bad index with good ones (the rest ran alone, and all were answered).
    const alone = settled.filter(
      (result) => result.status === "fulfilled" && batchOf(result.value)?.requests === 1,
    );
    expect(alone.length).toBeGreaterThanOrEqual(2);
  });

  test("by default only models whose config.json sets max_batch_size batch", async () => {
    const dir = repositoryWithConfigs({
      plain: { from: mlp(0), config: { description: "no batching keys" } },
      batched: { from: mlp(0), config: { max_batch_size: 4 } },
    });
    const replica = replicaWith({
      repository: openRepository(dir, { cacheDir: join(dir, ".cache") }),
      batching: undefined,
    });
    for (const model of ["plain", "batched"]) await replica.load(model);
    const run = (model: string) =>
      Promise.all([1, 2, 3].map((seed) => replica.infer({ model, inputs: [mlpInput(1, seed)] })));
    expect((await run("plain")).map((outcome) => batchOf(outcome)?.requests)).toEqual([1, 1, 1]);
    expect((await run("batched")).map((outcome) => batchOf(outcome)?.requests)).toEqual([3, 3, 3]);
  });

  test("config.json decides per model: max_batch_size 0 turns batching off, a preferred size goes at once", async () => {
    const dir = repositoryWithConfigs({
      solo: { from: mlp(0), config: { max_batch_size: 0 } },
      eager: {
        from: mlp(0),
        config: {
          max_batch_size: 4,
          dynamic_batching: { max_queue_delay_microseconds: 10_000_000, preferred_batch_size: [2] },
        },
      },
    });
    const replica = replicaWith({
      repository: openRepository(dir, { cacheDir: join(dir, ".cache") }),
    });
    await replica.load("solo");
    const solo = await Promise.all(
      [1, 2, 3].map((seed) => replica.infer({ model: "solo", inputs: [mlpInput(1, seed)] })),
    );
    expect(solo.map((outcome) => batchOf(outcome)?.requests)).toEqual([1, 1, 1]);

    await replica.load("eager");
    const started = performance.now();
    const eager = await Promise.all(
      [1, 2].map((seed) => replica.infer({ model: "eager", inputs: [mlpInput(1, seed)] })),
    );
    // Two requests make the preferred size: they do not wait out the ten-second delay.
    expect(performance.now() - started).toBeLessThan(2000);
    expect(eager.map(batchOf)).toEqual([
      { requests: 2, rows: 2 },
      { requests: 2, rows: 2 },
    ]);
  });

  test("a request whose client goes away while it waits for its batch leaves without running", async () => {
    const replica = replicaWith({ batching: { maxBatchSize: 8, maxQueueDelayMicroseconds: 100_000 } });
    await replica.load(mlp(0));
    const controller = new AbortController();
    const leaving = replica.infer({ model: mlp(0), inputs: [mlpInput(1, 1)], signal: controller.signal });
    const staying = replica.infer({ model: mlp(0), inputs: [mlpInput(1, 2)] });
    await sleep(20);
    controller.abort(new Error("client went away"));
    await expect(leaving).rejects.toThrow(/client went away/);
    expect(batchOf(await staying)).toEqual({ requests: 1, rows: 1 });
    expect(replica.state().inFlight).toBe(0);
  });
});
