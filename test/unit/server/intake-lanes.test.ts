import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, test } from "vitest";
import type { PooledInferCall } from "../../../backend/pool/replica-pool.ts";
import type { LaneSettings } from "../../../backend/replica/lane-protocol.ts";
import { sessionOptions } from "../../../backend/replica/session-options.ts";
import { WorkerSession } from "../../../backend/replica/worker-session.ts";
import { IntakeLanes } from "../../../backend/server/intake-lanes.ts";
import type { LaneNotice } from "../../../backend/server/intake-protocol.ts";
import { Deadline } from "../../../shared/deadline.ts";
import { SwitchyardError } from "../../../shared/errors.ts";
import { requestedModelKey } from "../../../shared/model-names.ts";
import type { OutputClasses } from "../../../shared/oip/classification.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";
import { IDENTITY_MODELS, MULTIPLEX_MODELS, repoModelPath } from "../../fixtures/paths.ts";
import { buildLookupModel, GATHER_TABLE, lookupRequest } from "../../integration/harness/behaviour-models.ts";

// An intake thread's lanes against a real session's thread (real onnxruntime, a real port): which requests
// take a lane, when a lane stops taking them and closes, and what its requests get when the session goes.

const MLP = MULTIPLEX_MODELS[0] ?? "";
const OPTIONS = sessionOptions({ kind: "cpu" }, { intraOpThreads: 1 });
const sessions: WorkerSession[] = [];
afterEach(async () => {
  await Promise.all(sessions.splice(0).map((session) => session.release()));
});

const input = (): Tensor => ({
  name: "x",
  datatype: "FP32",
  shape: [1, 16],
  data: Float32Array.from({ length: 16 }, (_, index) => index),
});
const call = (extra: { hint?: string; version?: string; timeoutMs?: number } = {}) => ({
  model: MLP,
  inputs: [input()],
  deadline: Deadline.in(extra.timeoutMs ?? 30_000),
  ...(extra.hint === undefined ? {} : { hint: extra.hint }),
  ...(extra.version === undefined ? {} : { version: extra.version }),
});

/** IntakeLanes with one lane to a real session of `model` (MLP), granted for `lifetimeMs`. */
async function withLane(
  lifetimeMs: number,
  settings: Partial<LaneSettings> = {},
  model = MLP,
  path = repoModelPath(model),
  classes: OutputClasses = { batched: false, labels: new Map() },
) {
  const session = await WorkerSession.create(path, OPTIONS);
  sessions.push(session);
  const laneSettings: LaneSettings = {
    model,
    inputs: session.inputs,
    outputs: session.outputs,
    maxConcurrency: 4,
    maxQueue: 4,
    ...settings,
  };
  const port = await session.openLane(laneSettings, () => {});
  const notices: LaneNotice[] = [];
  const lanes = new IntakeLanes((notice) => notices.push(notice));
  lanes.open({
    type: "lane",
    laneId: 7,
    key: requestedModelKey(model, undefined),
    port,
    model: { name: model, version: "1" },
    replica: "0",
    settings: laneSettings,
    classes,
    lifetimeMs,
  });
  return { session, lanes, notices };
}

describe("an intake thread's lanes", () => {
  test("requests for the lane's model without a hint take it and are answered from the session's thread", async () => {
    const { lanes } = await withLane(10_000);
    expect(lanes.has(call())).toBe(true);
    expect(lanes.has(call({ hint: "h" }))).toBe(false);
    expect(lanes.has(call({ version: "1" }))).toBe(false);
    expect(lanes.has({ ...call(), model: "other" })).toBe(false);
    const outcome = await lanes.infer(call());
    expect(outcome.model).toEqual({ name: MLP, version: "1" });
    expect(outcome.replica).toBe("0");
    expect(outcome.cache).toBe("hit");
    expect(outcome.outputs[0]?.shape).toEqual([1, 8]);
    expect(outcome.classes).toEqual({ batched: false, labels: new Map() });
  });

  test("its outcomes say how the model's outputs are classified, alone and in groups", async () => {
    const classes = { batched: true, labels: new Map([["y", ["cat", "dog"]]]) };
    const { lanes } = await withLane(10_000, {}, MLP, repoModelPath(MLP), classes);
    expect((await lanes.infer(call())).classes).toEqual(classes);
    const grouped = await withLane(
      10_000,
      { batching: { maxBatchSize: 4, maxQueueDelayMs: 1, preferredBatchSizes: [] } },
      MLP,
      repoModelPath(MLP),
      classes,
    );
    const outcomes = await Promise.all([grouped.lanes.infer(call()), grouped.lanes.infer(call())]);
    expect(outcomes.map((outcome) => outcome.classes)).toEqual([classes, classes]);
  });

  test("a lane request's infer holds the way to the session's thread and back, as the main thread's way does", async () => {
    const { lanes } = await withLane(10_000);
    await lanes.infer(call());
    const pending = lanes.infer(call());
    // Once the request has left, this thread busy for 100 ms: its answer comes back meanwhile and waits to
    // be read, which is the way back.
    await new Promise((resolve) => setImmediate(resolve));
    const until = performance.now() + 100;
    while (performance.now() < until) {}
    const { timings } = await pending;
    expect(timings.inferMs).toBeGreaterThanOrEqual(100);
    expect(timings.sessionMs).toBeLessThan(50);
    expect(timings.queueMs).toBeLessThan(50);
  });

  test("after its lifetime a lane takes no new request, and closes once the ones it has are answered", async () => {
    // A request alone waits 400 ms in its batch for company: it is still out when the lane's 100 ms are over.
    const { lanes, notices } = await withLane(100, {
      batching: { maxBatchSize: 8, maxQueueDelayMs: 400, preferredBatchSizes: [] },
    });
    const out = lanes.infer(call());
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(lanes.has(call())).toBe(false);
    expect(notices).toEqual([{ type: "lane-retired", laneId: 7 }]);
    expect((await out).outputs[0]?.shape).toEqual([1, 8]);
    expect(notices).toEqual([
      { type: "lane-retired", laneId: 7 },
      { type: "lane-closed", laneId: 7 },
    ]);
  });

  test("a revoked lane closes at once when it has nothing out", async () => {
    const { lanes, notices } = await withLane(10_000);
    lanes.revoke(7);
    expect(lanes.has(call())).toBe(false);
    expect(notices).toEqual([
      { type: "lane-retired", laneId: 7 },
      { type: "lane-closed", laneId: 7 },
    ]);
  });

  test("a request whose deadline passes on the lane gets 504; one whose session goes away gets 503", async () => {
    const { lanes, session, notices } = await withLane(10_000, {
      batching: { maxBatchSize: 8, maxQueueDelayMs: 5_000, preferredBatchSizes: [] },
    });
    const late = await lanes.infer(call({ timeoutMs: 100 })).catch((error: unknown) => error);
    expect(late).toBeInstanceOf(SwitchyardError);
    expect((late as SwitchyardError).status).toBe(504);
    const waiting = lanes.infer(call()).catch((error: unknown) => error);
    await new Promise((resolve) => setTimeout(resolve, 50));
    await session.release();
    const gone = await waiting;
    expect(gone).toBeInstanceOf(SwitchyardError);
    expect((gone as SwitchyardError).status).toBe(503);
    expect(lanes.has(call())).toBe(false);
    expect(notices.at(-1)).toEqual({ type: "lane-closed", laneId: 7 });
  });

  describe("a batching model's requests, grouped on the HTTP thread", () => {
    const BATCHING = { maxBatchSize: 8, maxQueueDelayMs: 0, preferredBatchSizes: [] };
    const rowOf = (index: number): Tensor => ({
      name: "x",
      datatype: "FP32",
      shape: [1, 16],
      data: Float32Array.from({ length: 16 }, (_, column) => Math.sin(index * 31 + column)),
    });
    const callOf = (index: number, timeoutMs = 30_000) => ({
      ...call({ timeoutMs }),
      inputs: [rowOf(index)],
    });
    const turn = () => new Promise((resolve) => setImmediate(resolve));

    test("requests read in one turn go as one group: one run, each request its own rows, bit for bit as alone", async () => {
      const { lanes, session } = await withLane(10_000, { batching: BATCHING });
      const outcomes = await Promise.all([0, 1, 2, 3, 4].map((index) => lanes.infer(callOf(index))));
      for (const [index, outcome] of outcomes.entries()) {
        expect(outcome.batch).toEqual({ requests: 5, rows: 5 });
        const alone = await session.run([rowOf(index)], ["y"]);
        expect(Array.from(outcome.outputs[0]?.data as Float32Array)).toEqual(
          Array.from(alone.outputs[0]?.data as Float32Array),
        );
        expect(outcome.outputs[0]?.shape).toEqual([1, 8]);
      }
    });

    test("a request that does not fit the model fails alone, before it joins a group", async () => {
      const { lanes } = await withLane(10_000, { batching: BATCHING });
      const bad = { ...callOf(9), inputs: [{ ...rowOf(9), shape: [1, 15], data: new Float32Array(15) }] };
      const settled = await Promise.allSettled([
        lanes.infer(callOf(0)),
        lanes.infer(bad),
        lanes.infer(callOf(1)),
      ]);
      expect(settled.map((each) => each.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
      const refusal = (settled[1] as PromiseRejectedResult).reason as SwitchyardError;
      expect(refusal.status).toBe(400);
      expect(refusal.message).toContain("shape");
      expect((settled[0] as PromiseFulfilledResult<{ batch?: unknown }>).value.batch).toEqual({
        requests: 2,
        rows: 2,
      });
    });

    test("one whose deadline passes while its group waits gets 504; the group's others are answered", async () => {
      const { lanes } = await withLane(10_000, { batching: { ...BATCHING, maxQueueDelayMs: 300 } });
      const [late, onTime] = await Promise.allSettled([lanes.infer(callOf(0, 100)), lanes.infer(callOf(1))]);
      expect(((late as PromiseRejectedResult).reason as SwitchyardError).status).toBe(504);
      expect((onTime as PromiseFulfilledResult<{ outputs: Tensor[] }>).value.outputs[0]?.shape).toEqual([
        1, 8,
      ]);
    });

    test("while two groups are out, what arrives gathers into the next one", async () => {
      // Each group waits 200 ms at the session for company: the first two meet there, in one run.
      const { lanes, notices } = await withLane(10_000, { batching: { ...BATCHING, maxQueueDelayMs: 200 } });
      const first = lanes.infer(callOf(0));
      await turn();
      const second = lanes.infer(callOf(1));
      await turn();
      const later = [lanes.infer(callOf(2)), lanes.infer(callOf(3))];
      await turn();
      await turn();
      const outcomes = await Promise.all([first, second, ...later]);
      // Sent at once, the last two would have joined the first run: they went together, after it.
      expect(outcomes.map((outcome) => outcome.batch?.requests)).toEqual([2, 2, 2, 2]);
      lanes.revoke(7);
      expect(notices.at(-1)).toEqual({ type: "lane-closed", laneId: 7 });
    });

    test("a large request goes alone: each counts against the session's bounds", async () => {
      // 80 KB a request: the copy into a group would cost more than the session's work per request saves.
      const IDENTITY = IDENTITY_MODELS.FP32;
      const { lanes } = await withLane(
        10_000,
        { batching: { ...BATCHING, maxQueueDelayMs: 300 }, maxConcurrency: 1, maxQueue: 1 },
        IDENTITY,
      );
      const large = (): PooledInferCall => ({
        model: IDENTITY,
        inputs: [{ name: "x", datatype: "FP32", shape: [1, 20_000], data: new Float32Array(20_000) }],
        deadline: Deadline.in(30_000),
      });
      const settled = await Promise.allSettled([
        lanes.infer(large()),
        lanes.infer(large()),
        lanes.infer(large()),
      ]);
      // One holds the place, one waits for it, the third finds the line full.
      expect(settled.map((each) => each.status)).toEqual(["fulfilled", "fulfilled", "rejected"]);
      expect(((settled[2] as PromiseRejectedResult).reason as SwitchyardError).status).toBe(429);
    });

    test("a group the model refuses at run time runs again request by request: only the one at fault fails", async () => {
      // A table lookup: an index outside the table passes every check and fails inside onnxruntime.
      const path = join(mkdtempSync(join(tmpdir(), "lookup-")), "model.onnx");
      writeFileSync(path, buildLookupModel());
      const { lanes } = await withLane(10_000, { batching: BATCHING }, "lookup", path);
      const lookup = (index: number): PooledInferCall => ({
        model: "lookup",
        inputs: [lookupRequest(index).inputs[0] as Tensor],
        deadline: Deadline.in(30_000),
      });
      const settled = await Promise.allSettled([0, 9, 2].map((index) => lanes.infer(lookup(index))));
      expect(settled.map((each) => each.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
      const values = [settled[0], settled[2]].map((each) =>
        Array.from(
          (each as PromiseFulfilledResult<{ outputs: Tensor[] }>).value.outputs[0]?.data as Float32Array,
        ),
      );
      expect(values).toEqual([[GATHER_TABLE[0]], [GATHER_TABLE[2]]]);
      // Each ran alone the second time: a batch of one.
      expect((settled[0] as PromiseFulfilledResult<{ batch?: unknown }>).value.batch).toEqual({
        requests: 1,
        rows: 1,
      });
      expect(((settled[1] as PromiseRejectedResult).reason as SwitchyardError).status).toBe(400);
    });
  });
});
