import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MessagePort } from "node:worker_threads";
import { afterEach, describe, expect, test } from "vitest";
import {
  LANE_REPORT_INTERVAL_MS,
  type LaneAnswer,
  type LaneReport,
  type LaneRequest,
  type LaneSettings,
  runsIn,
  servedIn,
} from "../../../backend/replica/lane-protocol.ts";
import { sessionOptions } from "../../../backend/replica/session-options.ts";
import { WorkerSession } from "../../../backend/replica/worker-session.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";
import { buildSlowModel, SLOW_WIDTH, seededFloats } from "../../fixtures/onnx-builder.ts";
import { MULTIPLEX_MODELS, repoModelPath } from "../../fixtures/paths.ts";
import { buildBatchSumModel } from "../../integration/harness/behaviour-models.ts";

// Lanes on a real session's thread (real onnxruntime, a real MessagePort): requests from an intake thread
// straight to the session, as backend/server/intake-lanes.ts sends them.

const OPTIONS = sessionOptions({ kind: "cpu" }, { intraOpThreads: 1 });
const MLP = MULTIPLEX_MODELS[0] ?? "";

const sessions: WorkerSession[] = [];
const ports: MessagePort[] = [];
afterEach(async () => {
  for (const port of ports.splice(0)) port.close();
  await Promise.all(sessions.splice(0).map((session) => session.release()));
});

const mlpInput = (rows: number, seed: number): Tensor => ({
  name: "x",
  datatype: "FP32",
  shape: [rows, 16],
  data: seededFloats(seed, rows * 16),
});

interface Opened {
  session: WorkerSession;
  port: MessagePort;
  reports: LaneReport[];
  /** The messages that came back, each a batch of answers, in order. */
  messages: LaneAnswer[][];
  /** Sends the requests in one message (as one turn's mailbox does) and resolves with as many answers. */
  send(requests: LaneRequest[], answers: number): Promise<Map<number, LaneAnswer>>;
}

async function openLane(
  settings: Partial<LaneSettings> = {},
  buckets: [number, string][] = [],
  modelPath = repoModelPath(MLP),
): Promise<Opened> {
  const session = await WorkerSession.create(modelPath, OPTIONS);
  sessions.push(session);
  for (const [size, model] of buckets) {
    const bucket = await WorkerSession.create(repoModelPath(model), OPTIONS);
    sessions.push(bucket);
    await session.connectBucket(size, bucket);
  }
  const reports: LaneReport[] = [];
  const port = await session.openLane(
    {
      model: MLP,
      inputs: session.inputs,
      outputs: session.outputs,
      maxConcurrency: 8,
      maxQueue: 8,
      ...settings,
    },
    (report) => reports.push(report),
  );
  ports.push(port);
  const answers = new Map<number, LaneAnswer>();
  const messages: LaneAnswer[][] = [];
  const waiters: (() => void)[] = [];
  port.on("message", (batch: LaneAnswer[]) => {
    messages.push(batch);
    for (const answer of batch) answers.set(answer.id, answer);
    for (const wake of waiters.splice(0)) wake();
  });
  return {
    session,
    port,
    reports,
    messages,
    async send(requests, count) {
      port.postMessage(requests);
      while (answers.size < count) await new Promise<void>((resolve) => waiters.push(resolve));
      return answers;
    },
  };
}

const infer = (id: number, inputs: Tensor[], extra: Partial<LaneRequest> = {}): LaneRequest => ({
  type: "infer",
  id,
  requests: 1,
  requestIds: [`request-${id}`],
  inputs,
  deadlineAt: Date.now() + 60_000,
  budgetMs: 60_000,
  ...extra,
});

/** The session's own answer for `input`, run alone. */
async function alone(session: WorkerSession, input: Tensor): Promise<Float32Array> {
  const { outputs } = await session.run([input], ["y"]);
  return outputs[0]?.data as Float32Array;
}

function outcome(answer: LaneAnswer | undefined): Extract<LaneAnswer, { type: "outcome" }> {
  if (answer?.type !== "outcome") throw new Error(`expected an outcome, got ${JSON.stringify(answer)}`);
  return answer;
}

function failure(answer: LaneAnswer | undefined): Extract<LaneAnswer, { type: "failure" }> {
  if (answer?.type !== "failure") throw new Error(`expected a failure, got ${JSON.stringify(answer)}`);
  return answer;
}

describe("a session's lanes", () => {
  test("requests that arrive together share a batch, and each gets its own rows, bit for bit those of a run alone", async () => {
    const lane = await openLane({
      batching: { maxBatchSize: 16, maxQueueDelayMs: 0, preferredBatchSizes: [] },
    });
    const inputs = [1, 2, 3, 1, 2, 1].map((rows, index) => mlpInput(rows, 100 + index));
    // The first in a buffer of a size the agent's pool reuses (as an HTTP thread reads large bodies).
    const first = inputs[0] as Tensor;
    const pooled = new Float32Array(new ArrayBuffer(64 * 1024), 0, (first.data as Float32Array).length);
    pooled.set(first.data as Float32Array);
    inputs[0] = { ...first, data: pooled };
    const expected = await Promise.all(
      inputs.map((input) => alone(lane.session, { ...input, data: (input.data as Float32Array).slice() })),
    );
    const answers = await lane.send(
      inputs.map((input, index) => infer(index, [input])),
      inputs.length,
    );
    let batched = 0;
    inputs.forEach((input, index) => {
      const answer = outcome(answers.get(index));
      const data = answer.outputs[0]?.data as Float32Array;
      expect(answer.outputs[0]?.shape).toEqual([input.shape[0], 8]);
      expect(data.length).toBe(expected[index]?.length);
      expect(data.every((value, at) => Object.is(value, expected[index]?.[at]))).toBe(true);
      if (answer.batch.requests > 1) batched += 1;
      // A body the intake thread's pool reuses comes back for its next request; one of a size the pool does
      // not keep is not sent back (it would only be dropped there).
      expect(answer.spare.map((buffer) => buffer.byteLength)).toEqual(index === 0 ? [64 * 1024] : []);
    });
    // The first runs at once, alone; those behind it gather.
    expect(batched).toBeGreaterThanOrEqual(4);
  });

  test("a batch's answers leave as soon as its run ends, before the thread takes in what arrived meanwhile", async () => {
    const path = join(mkdtempSync(join(tmpdir(), "slow-")), "model.onnx");
    writeFileSync(path, buildSlowModel());
    const lane = await openLane(
      { batching: { maxBatchSize: 256, maxQueueDelayMs: 0, preferredBatchSizes: [] } },
      [],
      path,
    );
    const rows = (count: number): Tensor => ({
      name: "x",
      datatype: "FP32",
      shape: [count, SLOW_WIDTH],
      data: new Float32Array(count * SLOW_WIDTH).fill(1),
    });
    // A run of 192 rows: about half a second on one thread (buildSlowModel). A request of the wrong shape
    // arrives while it runs; it fails the moment the thread takes it in.
    const answered = lane.send([infer(1, [rows(192)])], 2);
    await new Promise((resolve) => setTimeout(resolve, 80));
    lane.port.postMessage([infer(2, [mlpInput(1, 1)])]);
    await answered;
    // Gathered over the turn instead, the run's answer would have waited for the next turn's intake and left
    // with that failure, in one message. (Sorted: on a machine so loaded that the failure came before the run
    // began, it leaves first, alone either way.)
    const sent = lane.messages.map((message) => message.map(({ id, type }) => `${id}:${type}`).join(" "));
    expect(sent.sort()).toEqual(["1:outcome", "2:failure"]);
  });

  test("a request the model cannot take fails alone (400) and the others in its batch are served", async () => {
    const lane = await openLane({
      batching: { maxBatchSize: 16, maxQueueDelayMs: 0, preferredBatchSizes: [] },
    });
    const bad: Tensor = { name: "x", datatype: "FP32", shape: [1, 15], data: new Float32Array(15) };
    const answers = await lane.send(
      [
        infer(1, [mlpInput(1, 1)]),
        infer(2, [bad]),
        infer(3, [mlpInput(1, 3)], { outputs: ["nope"] }),
        infer(4, [mlpInput(2, 4)]),
      ],
      4,
    );
    expect(outcome(answers.get(1)).outputs[0]?.shape).toEqual([1, 8]);
    expect(failure(answers.get(2)).error).toMatchObject({ code: "bad_input" });
    expect(failure(answers.get(2)).error.message).toContain("shape [-1, 16]");
    expect(failure(answers.get(3)).error.message).toContain("has no output 'nope'");
    expect(outcome(answers.get(4)).outputs[0]?.shape).toEqual([2, 8]);
  });

  test("past the replica's concurrency and queue bounds a request is refused (429); an abort drops one still waiting", async () => {
    const lane = await openLane({ maxConcurrency: 1, maxQueue: 2 });
    const answers = await lane.send(
      [
        infer(1, [mlpInput(1, 1)]),
        infer(2, [mlpInput(1, 2)]),
        infer(3, [mlpInput(1, 3)]),
        infer(4, [mlpInput(1, 4)]),
        { type: "abort", id: 2 },
      ],
      4,
    );
    expect(outcome(answers.get(1)).outputs[0]?.shape).toEqual([1, 8]);
    expect(failure(answers.get(2)).error).toMatchObject({ code: "unavailable" });
    expect(outcome(answers.get(3)).outputs[0]?.shape).toEqual([1, 8]);
    const refused = failure(answers.get(4)).error;
    expect(refused).toMatchObject({ code: "queue_full", retryAfterSeconds: 1 });
    // Served requests are counted for the replica: each request, and each run (the aborted one never ran).
    await lane.session.reportLanes();
    const served = lane.reports.flatMap((report) => [...servedIn(report)]);
    // Each named by the client's id it came with, for the main thread's request lines.
    const idsOf = (ok: boolean) =>
      served
        .filter((entry) => entry.ok === ok)
        .map((entry) => entry.requestId)
        .sort();
    expect(idsOf(true)).toEqual(["request-1", "request-3"]);
    expect(idsOf(false)).toEqual(["request-2", "request-4"]);
    expect(lane.reports.flatMap((report) => [...runsIn(report)])).toHaveLength(2);
  });

  test("a request whose deadline passed while it waited fails 504 and does not run", async () => {
    const lane = await openLane();
    const answers = await lane.send(
      [infer(1, [mlpInput(1, 1)], { deadlineAt: Date.now() - 1, budgetMs: 5 })],
      1,
    );
    expect(failure(answers.get(1)).error).toMatchObject({ code: "deadline_exceeded" });
    expect(failure(answers.get(1)).error.message).toContain("5 ms");
    await lane.session.reportLanes();
    expect(lane.reports.flatMap((report) => [...runsIn(report)])).toHaveLength(0);
  });

  test("what the lanes served reaches the main thread at most every LANE_REPORT_INTERVAL_MS, at once on the first answer and when asked", async () => {
    const lane = await openLane();
    const started = performance.now();
    await lane.send([infer(0, [mlpInput(1, 0)])], 1);
    // The first answer after a quiet spell is reported at the end of its turn, not an interval later.
    while (lane.reports.length === 0) await new Promise((resolve) => setImmediate(resolve));
    // One after another, each in a turn of its own: their reports gather.
    const requests = 12;
    for (let id = 1; id <= requests; id += 1) await lane.send([infer(id, [mlpInput(1, id)])], id + 1);
    const elapsed = performance.now() - started;
    expect(lane.reports.length).toBeLessThanOrEqual(2 + Math.ceil(elapsed / LANE_REPORT_INTERVAL_MS));
    // Asked, the thread reports the rest before its reply: every answered request is counted.
    await lane.session.reportLanes();
    const served = lane.reports.flatMap((report) => [...servedIn(report)]);
    expect(served.filter((entry) => entry.ok)).toHaveLength(requests + 1);
    expect(lane.reports.flatMap((report) => [...runsIn(report)])).toHaveLength(requests + 1);
  });

  test("a reader asking while the session is being released still hears of every request its lanes served", async () => {
    const lane = await openLane();
    for (let id = 0; id < 3; id += 1) await lane.send([infer(id, [mlpInput(1, id)])], id + 1);
    const released = lane.session.release();
    await lane.session.reportLanes();
    const served = lane.reports.flatMap((report) => [...servedIn(report)]);
    expect(served.filter((entry) => entry.ok)).toHaveLength(3);
    await released;
  });

  test("with batch buckets, a batch runs padded on its bucket's session, on that session's thread, and each request gets its rows", async () => {
    // The bucket of 4 is another model with the same signature, so that its answers show where the batch ran.
    const OTHER = MULTIPLEX_MODELS[1] ?? "";
    const lane = await openLane(
      { batching: { maxBatchSize: 4, maxQueueDelayMs: 0, preferredBatchSizes: [], buckets: [1, 4] } },
      [[4, OTHER]],
    );
    const other = await WorkerSession.create(repoModelPath(OTHER), OPTIONS);
    sessions.push(other);
    // The first two in buffers of a size the agent's pool reuses (as an HTTP thread reads bodies), the third
    // in one of its own exact size (as a JSON request's array).
    const inPooledBuffer = (input: Tensor): Tensor => {
      const data = new Float32Array(new ArrayBuffer(64 * 1024), 0, 16);
      data.set(input.data as Float32Array);
      return { ...input, data };
    };
    const inputs = [inPooledBuffer(mlpInput(1, 1)), inPooledBuffer(mlpInput(1, 2)), mlpInput(1, 3)];
    const copies = inputs.map((input) => ({ ...input, data: (input.data as Float32Array).slice() }));
    const answers = await lane.send(
      inputs.map((input, index) => infer(index, [input])),
      3,
    );
    // Arrived together: one batch of 3 rows, padded to 4 and run on the bucket's session.
    for (const index of [0, 1, 2]) {
      const answer = outcome(answers.get(index));
      expect(answer.batch).toEqual({ requests: 3, rows: 3 });
      expect(answer.outputs[0]?.shape).toEqual([1, 8]);
      const expected = await alone(other, copies[index] as Tensor);
      const data = answer.outputs[0]?.data as Float32Array;
      expect(data.every((value, at) => Object.is(value, expected[at]))).toBe(true);
      // A body the pool reuses came back from the bucket's thread too; the other was left there.
      expect(answer.spare.map((buffer) => buffer.byteLength)).toEqual(index < 2 ? [64 * 1024] : []);
    }
    // A request alone runs on bucket 1: this session.
    const [alone1] = [mlpInput(1, 9)];
    const copy = { ...(alone1 as Tensor), data: ((alone1 as Tensor).data as Float32Array).slice() };
    const single = outcome((await lane.send([infer(9, [alone1 as Tensor])], 4)).get(9));
    expect(Array.from(single.outputs[0]?.data as Float32Array)).toEqual(
      Array.from(await alone(lane.session, copy)),
    );
  });

  describe("a group of requests an HTTP thread stacked (lane-groups.ts)", () => {
    const BATCHING = { maxBatchSize: 8, maxQueueDelayMs: 0, preferredBatchSizes: [] };

    test("is one call: its rows come back together, and it counts as its requests", async () => {
      const lane = await openLane({ batching: BATCHING });
      const input = mlpInput(3, 41);
      const answers = await lane.send(
        [infer(1, [input], { requests: 3, requestIds: ["first", "", "third"] })],
        1,
      );
      const answered = outcome(answers.get(1));
      expect(answered.outputs[0]?.shape).toEqual([3, 8]);
      expect(Array.from(answered.outputs[0]?.data as Float32Array)).toEqual(
        Array.from(await alone(lane.session, input)),
      );
      expect(answered.batch).toEqual({ requests: 3, rows: 3 });
      await new Promise((resolve) => setTimeout(resolve, 50));
      const served = lane.reports.flatMap((report) => [...servedIn(report)]);
      // Each of its requests by its own id ("": it came without one).
      expect(served.map((each) => [each.ok, each.requestId])).toEqual([
        [true, "first"],
        [true, ""],
        [true, "third"],
      ]);
    });

    test("whose output does not keep the batch's rows fails 400, uncounted: its thread runs each request alone", async () => {
      const path = join(mkdtempSync(join(tmpdir(), "batch-sum-")), "model.onnx");
      writeFileSync(path, buildBatchSumModel());
      const lane = await openLane({ batching: BATCHING }, [], path);
      const rows = (count: number): Tensor => ({
        name: "x",
        datatype: "FP32",
        shape: [count, 4],
        data: new Float32Array(count * 4).fill(1),
      });
      const answers = await lane.send([infer(1, [rows(2)], { requests: 2 }), infer(2, [rows(1)])], 2);
      expect(failure(answers.get(1)).error.code).toBe("bad_input");
      expect(failure(answers.get(1)).error.message).toContain("does not keep the batch's rows");
      expect(outcome(answers.get(2)).outputs[0]?.shape).toEqual([1, 4]);
      await new Promise((resolve) => setTimeout(resolve, 50));
      const served = lane.reports.flatMap((report) => [...servedIn(report)]);
      expect(served.map((each) => each.ok)).toEqual([true]);
    });
  });
});
