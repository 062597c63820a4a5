import { describe, expect, test } from "vitest";
import type { PooledInferCall, PooledOutcome } from "../../../backend/pool/replica-pool.ts";
import { requestBuffers } from "../../../backend/replica/buffer-pool.ts";
import type { LaneSettings } from "../../../backend/replica/lane-protocol.ts";
import { type GroupLane, LaneGroups, type LaneSettlement } from "../../../backend/server/lane-groups.ts";
import { Deadline } from "../../../shared/deadline.ts";
import type { Tensor } from "../../../shared/oip/tensor.ts";

// What a real session cannot be made to do on cue: refuse a group's stacked inputs at run time although each
// request passed the checks (onnxruntime refusing a value, say). The lane here is scripted, but moves what a
// real one moves (structuredClone with the transfer list detaches those buffers here, as postMessage does) and
// numbers its requests as the real one does; everything else about groups runs against a real session's
// thread in intake-lanes.test.ts.

const SETTINGS: LaneSettings = {
  model: "m",
  inputs: [{ name: "x", datatype: "FP32", shape: [-1, 2] }],
  outputs: [{ name: "y", datatype: "FP32", shape: [-1, 2] }],
  batching: { maxBatchSize: 8, maxQueueDelayMs: 0, preferredBatchSizes: [] },
  maxConcurrency: 4,
  maxQueue: 4,
};

/** A body of the pool's smallest pooled size, its one row of two numbers at its start (as a decoded request's). */
const BODY_BYTES = 64 * 1024;

const callOf = (value: number, requestId?: string): PooledInferCall => {
  const data = new Float32Array(new ArrayBuffer(BODY_BYTES), 0, 2).fill(value);
  return {
    model: "m",
    inputs: [{ name: "x", datatype: "FP32", shape: [1, 2], data }],
    deadline: Deadline.in(30_000),
    ...(requestId === undefined ? {} : { requestId }),
  };
};

const outcome = (outputs: Tensor[]): PooledOutcome => ({
  model: { name: "m", version: "1" },
  replica: "0",
  outputs,
  cache: "hit",
  timings: { poolQueueMs: 0, queueMs: 0, loadMs: 0, inferMs: 0, sessionMs: 0 },
  classes: { batched: false, labels: new Map() },
});

/** A scripted lane: each group is answered with `answer(its stacked inputs)`; `sent` gets each request. */
function scriptedLane(
  answer: (inputs: Tensor[]) => LaneSettlement,
  alone: GroupLane["alone"],
  sent: Parameters<GroupLane["send"]>[0][] = [],
): GroupLane {
  let nextId = 0;
  return {
    send: (request, transfer, settle) => {
      sent.push(request);
      nextId += 1;
      const moved = structuredClone(request, { transfer });
      setImmediate(() => settle(answer(moved.inputs)));
      return nextId;
    },
    abort: () => {},
    flush: () => {},
    alone,
    outcome: (_answer, outputs) => outcome(outputs),
    changed: () => {},
  };
}

describe("a group the model refuses at run time", () => {
  test("each of its requests runs again alone, on its own inputs: only the one at fault fails", async () => {
    const alone: number[] = [];
    const lane = scriptedLane(
      () => ({
        type: "failure",
        id: 1,
        error: { code: "bad_input", message: "onnxruntime refused a value" },
      }),
      (call) => {
        const data = call.inputs[0]?.data as Float32Array | undefined;
        const value = data?.[0] ?? 0;
        alone.push(value);
        // Its body was not handed back to the pool while its group was out: no other request can have it.
        expect(requestBuffers.takeIdle(BODY_BYTES)).toBeUndefined();
        return value === 2
          ? Promise.reject(new Error("onnxruntime refused 2"))
          : Promise.resolve(outcome(call.inputs));
      },
    );
    const groups = new LaneGroups(lane, SETTINGS, 8);
    const settled = await Promise.allSettled([1, 2, 3].map((value) => groups.add(callOf(value))));
    expect(alone).toEqual([1, 2, 3]);
    expect(settled.map((each) => each.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
    expect(groups.busy).toBe(false);
  });

  test("any other failure fails the whole group as it is", async () => {
    const lane = scriptedLane(
      () => ({
        type: "failure",
        id: 1,
        error: { code: "queue_full", message: "busy", retryAfterSeconds: 1 },
      }),
      () => Promise.reject(new Error("not expected")),
    );
    const groups = new LaneGroups(lane, SETTINGS, 8);
    const settled = await Promise.allSettled([1, 2].map((value) => groups.add(callOf(value))));
    for (const each of settled) {
      expect(each.status).toBe("rejected");
      expect((each as PromiseRejectedResult).reason).toMatchObject({ status: 429 });
    }
  });
});

describe("a group answered", () => {
  test("each request gets its rows, and the bodies copied into the group go back to the pool", async () => {
    const sent: Parameters<GroupLane["send"]>[0][] = [];
    const lane = scriptedLane(
      (inputs) => ({
        type: "outcome",
        id: 1,
        outputs: [{ ...(inputs[0] as Tensor), name: "y" }],
        timings: { queueMs: 0, runMs: 1, sessionMs: 1 },
        batch: { requests: 2, rows: 2 },
        spare: [],
        roundTripMs: 2,
      }),
      () => Promise.reject(new Error("not expected")),
      sent,
    );
    const groups = new LaneGroups(lane, SETTINGS, 8);
    const calls = [callOf(5, "five"), callOf(6)];
    const outcomes = await Promise.all(calls.map((call) => groups.add(call)));
    // One lane request for both, naming each of its requests in the order of its rows ("": none given).
    expect(sent.map((request) => [request.requests, request.requestIds])).toEqual([[2, ["five", ""]]]);
    expect(outcomes.map((each) => Array.from(each.outputs[0]?.data as Float32Array))).toEqual([
      [5, 5],
      [6, 6],
    ]);
    const bodies = new Set(
      calls.map((call) => (call.inputs[0] as Tensor).data as Float32Array).map((data) => data.buffer),
    );
    expect(bodies.has(requestBuffers.takeIdle(BODY_BYTES) as ArrayBuffer)).toBe(true);
  });
});
