import { setImmediate as nextTurn } from "node:timers/promises";
import { describe, expect, test, vi } from "vitest";
import { SwitchyardError } from "../../../shared/errors.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";
import type { ReplicaState } from "../../../shared/protocol/replica-state.ts";
import { mlpWeights, referenceMlp } from "../../fixtures/onnx-builder.ts";
import { BIG_MODEL, BROKEN_MODEL, MULTIPLEX_MODELS, MULTIPLEX_SPECS } from "../../fixtures/paths.ts";
import { expectAllClose } from "../../support/close-to.ts";
import { useTestReplicas } from "./test-replicas.ts";

// Replicas on real onnxruntime sessions over the generated repository: what a user of the agent sees.

const replicaWith = useTestReplicas();

const model = (index: number) => MULTIPLEX_MODELS[index] ?? "";
const inputFor = (batch = 2): Tensor => ({
  name: "x",
  datatype: "FP32",
  shape: [batch, 16],
  data: Float32Array.from({ length: batch * 16 }, (_, index) => Math.sin(index)),
});
/** A replica reports its changes at the end of the event loop's turn: after this, this turn's have come. */
const reportsOfThisTurn = () => nextTurn();
const loadedNames = (state: ReplicaState) => state.loaded.map((entry) => entry.name).sort();

describe("Replica", () => {
  test("computes what the model computes, and reports a miss then a hit", async () => {
    const replica = replicaWith();
    const input = inputFor(3);
    const first = await replica.infer({ model: model(0), inputs: [input] });
    const second = await replica.infer({ model: model(0), inputs: [input] });
    const spec = MULTIPLEX_SPECS[0];
    if (spec === undefined) throw new Error("fixture spec missing");
    const expected = referenceMlp(mlpWeights(spec), input.data as Float32Array, 3);
    const output = first.outputs[0];
    expect(output?.shape).toEqual([3, 8]);
    expectAllClose(output?.data as Float32Array, expected);
    expect([first.cache, second.cache]).toEqual(["miss", "hit"]);
    expect(first.model).toEqual({ name: model(0), version: "1" });
    expect(first.timings.loadMs).toBeGreaterThan(0);
    expect(second.timings.loadMs).toBe(0);
    const timings = replica.state().timings[`${model(0)}:1`];
    expect(timings?.loads).toBe(1);
    expect(timings?.runs).toBe(2);
    expect(timings?.loadMs).toBeGreaterThan(0);
    expect(timings?.inferMs).toBeGreaterThan(0);
  });

  test("the states it sends the gateway carry the timings of what it holds and of what changed since the last state frame, not of every model it ran", async () => {
    const replica = replicaWith({ maxModels: 1 });
    const key = (index: number) => `${model(index)}:1`;
    const keys = (state: ReplicaState) => Object.keys(state.timings).sort();
    await replica.infer({ model: model(0), inputs: [inputFor()] });
    expect(keys(replica.resultState())).toEqual([key(0)]);
    expect(keys(replica.frameState(false))).toEqual([key(0)]);
    // Model 1 evicts model 0, whose figures a state frame carried already.
    await replica.infer({ model: model(1), inputs: [inputFor()] });
    expect(keys(replica.resultState())).toEqual([key(1)]);
    // Model 2 evicts model 1: no state frame carried model 1's figures yet, so a result's state still does
    // (a result's state may be dropped on its way; a state frame's is not).
    await replica.infer({ model: model(2), inputs: [inputFor()] });
    expect(keys(replica.resultState())).toEqual([key(1), key(2)]);
    expect(keys(replica.frameState(false))).toEqual([key(1), key(2)]);
    expect(keys(replica.resultState())).toEqual([key(2)]);
    // Now and then a state frame carries them all; the agent's own reading always does.
    expect(keys(replica.frameState(true))).toEqual([key(0), key(1), key(2)]);
    expect(keys(replica.state())).toEqual([key(0), key(1), key(2)]);
    expect(replica.state().timings[key(0)]).toMatchObject({ loads: 1, runs: 1 });
  });

  test("inputs handed over move to the model's worker without a copy; others stay the caller's", async () => {
    const replica = replicaWith();
    const spec = MULTIPLEX_SPECS[0];
    if (spec === undefined) throw new Error("fixture spec missing");
    const kept = inputFor(2);
    const expected = referenceMlp(mlpWeights(spec), kept.data as Float32Array, 2);
    const handed = { ...kept, data: Float32Array.from(kept.data as Float32Array) };
    const moved = await replica.infer({ model: model(0), inputs: [handed], handOverInputs: true });
    expectAllClose(moved.outputs[0]?.data as Float32Array, expected);
    expect((handed.data as Float32Array).byteLength).toBe(0);
    const copied = await replica.infer({ model: model(0), inputs: [kept] });
    expectAllClose(copied.outputs[0]?.data as Float32Array, expected);
    expect((kept.data as Float32Array).length).toBe(32);
  });

  test("concurrent requests for a model that is not loaded share one load", async () => {
    const replica = replicaWith();
    const outcomes = await Promise.all(
      Array.from({ length: 4 }, () => replica.infer({ model: BIG_MODEL, inputs: [inputFor()] })),
    );
    expect(outcomes.every((outcome) => outcome.cache === "miss")).toBe(true);
    expect(replica.state().timings[`${BIG_MODEL}:1`]?.loads).toBe(1);
  });

  test("keeps at most max-models loaded, evicting the least recently used", async () => {
    const replica = replicaWith({ maxModels: 2 });
    await replica.infer({ model: model(0), inputs: [inputFor()] });
    await replica.infer({ model: model(1), inputs: [inputFor()] });
    await replica.infer({ model: model(0), inputs: [inputFor()] }); // m000 is now the most recent
    await replica.infer({ model: model(2), inputs: [inputFor()] });
    expect(loadedNames(replica.state())).toEqual([model(0), model(2)]);
    const again = await replica.infer({ model: model(1), inputs: [inputFor()] });
    expect(again.cache).toBe("miss");
  });

  test("keeps loaded models within the byte budget", async () => {
    const replica = replicaWith({ maxModels: 10, maxModelBytes: 600 * 1024 });
    for (let index = 0; index < 4; index += 1)
      await replica.infer({ model: model(index), inputs: [inputFor()] });
    const state = replica.state();
    expect(state.memoryUsedBytes).toBeLessThanOrEqual(600 * 1024);
    expect(loadedNames(state)).toEqual([model(2), model(3)]);
  });

  test("refuses a model larger than the whole budget with a clear error", async () => {
    const replica = replicaWith({ maxModelBytes: 1024 * 1024 });
    const failure = await replica
      .infer({ model: BIG_MODEL, inputs: [inputFor()] })
      .catch((error: unknown) => error);
    expect(failure).toBeInstanceOf(SwitchyardError);
    expect((failure as SwitchyardError).status).toBe(413);
    expect((failure as SwitchyardError).message).toMatch(/big/);
  });

  test("a corrupt model fails with a clear error, is reported, and other models keep working", async () => {
    const replica = replicaWith();
    const failure = await replica
      .infer({ model: BROKEN_MODEL, inputs: [inputFor()] })
      .catch((error: unknown) => error);
    expect((failure as SwitchyardError).code).toBe("model_load_failed");
    expect((failure as SwitchyardError).message).toMatch(/broken/);
    expect(replica.state().failed).toEqual([expect.objectContaining({ name: BROKEN_MODEL, version: "1" })]);
    const ok = await replica.infer({ model: model(0), inputs: [inputFor()] });
    expect(ok.outputs[0]?.shape).toEqual([2, 8]);
  });

  test("rejects inputs that do not fit the model, naming what is wrong", async () => {
    const replica = replicaWith();
    const cases: Array<[Tensor[], RegExp]> = [
      [[{ ...inputFor(), name: "nope" }], /no input 'nope'.*x/],
      [[{ name: "x", datatype: "FP64", shape: [1, 16], data: new Float64Array(16) }], /FP32, got FP64/],
      [
        [{ name: "x", datatype: "FP32", shape: [1, 15], data: new Float32Array(15) }],
        /shape \[-1, 16\].*\[1, 15\]/,
      ],
      [[], /needs input\(s\) x/],
    ];
    for (const [inputs, message] of cases) {
      const failure = await replica.infer({ model: model(0), inputs }).catch((error: unknown) => error);
      expect((failure as SwitchyardError).status).toBe(400);
      expect((failure as SwitchyardError).message).toMatch(message);
    }
    const unknownOutput = await replica
      .infer({ model: model(0), inputs: [inputFor()], outputs: ["z"] })
      .catch((error: unknown) => error);
    expect((unknownOutput as SwitchyardError).message).toMatch(/no output 'z'/);
  });

  test("an unknown model is a 404", async () => {
    const failure = await replicaWith()
      .infer({ model: "missing", inputs: [inputFor()] })
      .catch((error: unknown) => error);
    expect((failure as SwitchyardError).status).toBe(404);
  });

  test("runs at most max-concurrency requests at once; the rest are reported as queued", async () => {
    const replica = replicaWith({ maxConcurrency: 1 });
    const seen: ReplicaState[] = [];
    replica.onChange((state) => seen.push(state));
    await Promise.all(
      Array.from({ length: 3 }, () => replica.infer({ model: model(0), inputs: [inputFor()] })),
    );
    await reportsOfThisTurn();
    expect(Math.max(...seen.map((state) => state.inFlight))).toBe(1);
    expect(Math.max(...seen.map((state) => state.queued))).toBe(2);
    const last = seen.at(-1);
    expect(last?.inFlight).toBe(0);
    expect(last?.queued).toBe(0);
  });

  test("reports a load while it goes, and the request once it is done", async () => {
    const replica = replicaWith();
    const seen: ReplicaState[] = [];
    replica.onChange((state) => seen.push(state));
    await replica.infer({ model: model(0), inputs: [inputFor()] });
    await reportsOfThisTurn();
    // The load takes turns of its own (a worker thread reads the model): it shows as loading meanwhile.
    expect(seen.some((state) => state.loading.some((entry) => entry.name === model(0)))).toBe(true);
    expect(seen.at(-1)?.loaded).toEqual([expect.objectContaining({ name: model(0), inFlight: 0 })]);
  });

  test("a request's steps on a loaded model are reported together, never half done", async () => {
    const replica = replicaWith();
    await replica.infer({ model: model(0), inputs: [inputFor()] });
    const seen: ReplicaState[] = [];
    replica.onChange((state) => seen.push(state));
    await replica.infer({ model: model(0), inputs: [inputFor()] });
    await reportsOfThisTurn();
    // Its slot and its lease are taken in one turn of the event loop and given back in another (or, when
    // the run answers at once, the same): a report per turn, taken after the turn's changes, never between
    // the slot and the lease (four reports, two of them half done, when each change made one).
    const counts = seen.map((state) => [state.inFlight, state.loaded[0]?.inFlight]);
    expect(counts.length).toBeLessThanOrEqual(2);
    expect(counts.at(-1)).toEqual([0, 0]);
    for (const [slots, leases] of counts) expect(slots).toBe(leases);
  });

  test("a state listener that throws is logged; the others still hear every report", async () => {
    const replica = replicaWith();
    const logged = vi.spyOn(console, "error").mockImplementation(() => undefined);
    const unsubscribe = replica.onChange(() => {
      throw new Error("listener bug");
    });
    try {
      const seen: ReplicaState[] = [];
      replica.onChange((state) => seen.push(state));
      await replica.infer({ model: model(0), inputs: [inputFor()] });
      await reportsOfThisTurn();
      expect(seen.at(-1)?.loaded).toEqual([expect.objectContaining({ name: model(0), inFlight: 0 })]);
      expect(logged).toHaveBeenCalledWith("replica: a state listener threw", expect.any(Error));
    } finally {
      unsubscribe();
      logged.mockRestore();
    }
  });

  test("keep-alive unloads a model left idle", async () => {
    const replica = replicaWith({ keepAliveMs: 150 });
    await replica.infer({ model: model(0), inputs: [inputFor()] });
    expect(loadedNames(replica.state())).toEqual([model(0)]);
    await expect.poll(() => loadedNames(replica.state()), { timeout: 3000, interval: 50 }).toEqual([]);
  });

  test("load and unload through the repository extension", async () => {
    const replica = replicaWith();
    const signature = await replica.load(model(1));
    expect(signature.inputs).toEqual([{ name: "x", datatype: "FP32", shape: [-1, 16] }]);
    expect(signature.outputs).toEqual([{ name: "y", datatype: "FP32", shape: [-1, 8] }]);
    expect(replica.isLoaded({ name: model(1), version: "1" })).toBe(true);
    expect(await replica.unload(model(1))).toBe(true);
    expect(replica.isLoaded({ name: model(1), version: "1" })).toBe(false);
    expect(await replica.unload(model(1))).toBe(false);
  });
});
